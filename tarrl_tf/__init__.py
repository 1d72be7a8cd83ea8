"""tarrl_tf: task-agnostic robust representation learning for Keras 3 / TensorFlow.

Rooms (each a subpackage; imports run downward only):

- `ssl`: random views, self-supervised objectives, methods (`METHODS`);
- `robustness`: divergences (`DIVERGENCES`), the projected-gradient search,
  estimators of R (`ESTIMATORS`), BatchNorm passes;
- `training`: `TARRLModel`, the baselines, training methods (`METHODS`), one run;
- `attacks`: one record per attack (`ATTACKS`), `AttackSpec`, the CleverHans adapter;
- `evaluation`: the downstream protocol, heads, tasks, sanity checks, reports;
- `zoo`: manifest, model cards, serving contract, publishing;
- `pipeline`: the experiments rows run end to end (train, evaluate, publish).

Below them: `encoders` (architectures), `data`, `checks`, `files`, `registry`.
"""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tarrl_tf needs the TensorFlow backend of Keras (it uses tf.GradientTape and "
        f"tf.data); KERAS_BACKEND is {_keras.backend.backend()!r}"
    )

from tarrl_tf._version import __version__  # noqa: E402, F401
from tarrl_tf import (  # noqa: E402
    attacks,
    checks,
    data,
    encoders,
    evaluation,
    export,
    robustness,
    ssl,
    training,
    zoo,
)
from tarrl_tf import _aliases  # noqa: E402
from tarrl_tf.training import ACLModel, DeACLModel, SupervisedATModel, TARRLModel  # noqa: E402

# The module names of 0.1.0 (`tarrl_tf.regularizers`, `tarrl_tf.acl_model`, ...).
_aliases.install(__import__(__name__))

__all__ = [
    "ACLModel", "DeACLModel", "SupervisedATModel", "TARRLModel", "attacks", "augment",
    "baselines", "checks", "data", "divergences", "downstream", "encoders", "evaluation",
    "export", "losses", "methods", "regularizers", "robustness", "ssl", "tasks", "training", "zoo",
]
