"""tarrl_tf: task-agnostic robust representation learning for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tarrl_tf needs the TensorFlow backend of Keras (it uses tf.GradientTape and "
        f"tf.data); KERAS_BACKEND is {_keras.backend.backend()!r}"
    )

from tarrl_tf import (  # noqa: E402
    attacks,
    augment,
    baselines,
    checks,
    data,
    divergences,
    downstream,
    encoders,
    evaluation,
    export,
    losses,
    methods,
    regularizers,
    tasks,
    zoo,
)
from tarrl_tf.acl_model import ACLModel  # noqa: E402
from tarrl_tf.deacl_model import DeACLModel  # noqa: E402
from tarrl_tf.supervised_at_model import SupervisedATModel  # noqa: E402
from tarrl_tf.tarrl_model import TARRLModel  # noqa: E402

__all__ = [
    "ACLModel", "DeACLModel", "SupervisedATModel", "TARRLModel", "attacks", "augment",
    "baselines", "checks", "data", "divergences", "downstream", "encoders", "evaluation",
    "export", "losses", "methods", "regularizers", "tasks", "zoo",
]
