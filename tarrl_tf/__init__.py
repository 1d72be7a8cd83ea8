"""tarrl_tf: task-agnostic robust representation learning for Keras 3 / TensorFlow."""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tarrl_tf needs the TensorFlow backend of Keras (it uses tf.GradientTape and "
        f"tf.data); KERAS_BACKEND is {_keras.backend.backend()!r}"
    )

from tarrl_tf import augment, checks, divergences, encoders, losses, methods, regularizers
from tarrl_tf.tarrl_model import TARRLModel

__version__ = "0.1.0"
