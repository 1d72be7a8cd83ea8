"""Keras 3 shims for CleverHans 4.0.0's attacks, kept here so no caller works around them."""

import keras
from cleverhans.tf2.attacks.spsa import SPSAAdam as _CleverHansSPSAAdam


class _KerasAdamWithLr(keras.optimizers.Adam):
    # cleverhans 4.0.0's SPSAAdam calls `Adam.__init__(lr=...)` and reads
    # `self.lr`; Keras 3 renamed both to `learning_rate`.
    def __init__(self, lr, **kwargs):
        super().__init__(learning_rate=lr, **kwargs)

    @property
    def lr(self):
        return self.learning_rate


class SPSAAdam(_CleverHansSPSAAdam, _KerasAdamWithLr):
    """CleverHans' SPSAAdam, constructible under Keras 3 (see `_KerasAdamWithLr`)."""


class ResettableAdam:
    """The optimizer handed to CleverHans' CarliniWagnerL2 under Keras 3.

    CW resets Adam before each binary-search step with
    `for v in optimizer.variables(): v.assign(zeros)`. In Keras 3 `variables`
    is a list (calling it raises TypeError) and holds the learning rate, which
    that loop would set to zero. Here `variables()` starts a fresh Adam and
    leaves nothing to zero.
    """

    def __init__(self, learning_rate):
        self._learning_rate = learning_rate
        self._adam = keras.optimizers.Adam(learning_rate=learning_rate)

    def variables(self):
        self._adam = keras.optimizers.Adam(learning_rate=self._learning_rate)
        return []

    def apply_gradients(self, grads_and_vars):
        self._adam.apply_gradients(grads_and_vars)
