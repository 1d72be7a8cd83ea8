"""The robustness regularizer: divergences, the projected-gradient search, estimators, BatchNorm passes."""

from tarrl_tf.robustness import batchnorm, divergences, persistent, regularizers, search  # noqa: F401
