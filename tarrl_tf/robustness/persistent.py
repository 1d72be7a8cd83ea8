"""`PersistentPGD`: each image keeps its worst-case perturbation from one visit to the next.

A few ascent steps per visit, started where the previous visit ended, add up
over the epochs to a search of many steps, at the cost of a few: the idea of
free adversarial training (Shafahi et al. 2019) and ATTA (Zheng et al. 2020),
applied to the representation's divergence instead of a classifier's loss.
"""

import numbers

import keras
import tensorflow as tf

from tarrl_tf.robustness.regularizers import ESTIMATORS, PGD
from tarrl_tf.robustness.search import project, projected_gradient_ascent, random_in_ball


@ESTIMATORS.register("persistent_pgd")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class PersistentPGD(PGD):
    """PGD that starts each image from its perturbation of the previous visit.

    Each image needs a stable index in `[0, num_examples)`: train on
    `tarrl_tf.data.pretraining_dataset(images, ..., with_indices=True)`;
    `TARRLModel` hands the indices to `perturb`. An image's first visit
    starts at a random point of the ball. The remembered perturbations are
    re-projected onto the current ball (the radius may be warming up). They
    are not part of a saved model, but a training run's backups keep them
    (`variables`), so a resumed run goes on from them. Without indices (evaluation, `R` on a held-out batch) the search
    is plain PGD from a random start.

    Args:
        epsilon: radius of the ball.
        num_examples: how many images the memory holds.
        norm: `"inf"` or `2`.
        steps: ascent steps per visit.
        step_size: size of each step; defaults to `epsilon / 2`: from a
            remembered start a step crosses part of the ball, and a few
            visits cross all of it.
        divergence, clip_min, clip_max: see `Regularizer`.
    """

    needs_indices = True

    def __init__(self, epsilon, *, num_examples, norm="inf", steps=1, step_size=None, **kwargs):
        kwargs.pop("random_start", None)  # Always random on a first visit.
        super().__init__(epsilon, norm=norm, steps=steps, step_size=step_size, random_start=True,
                         **kwargs)
        if (not isinstance(num_examples, numbers.Integral) or isinstance(num_examples, bool)
                or num_examples < 1):
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        self.num_examples = int(num_examples)
        self.memory = None
        self.visited = None

    def build(self, input_shape):
        """Creates the memory for images of shape `input_shape[1:]` (once)."""
        if self.memory is not None:
            return
        shape = [self.num_examples, *input_shape[1:]]
        self.memory = tf.Variable(tf.zeros(shape), trainable=False, name="perturbations")
        self.visited = tf.Variable(tf.zeros([self.num_examples], tf.bool), trainable=False,
                                   name="visited")

    @property
    def variables(self):
        return () if self.memory is None else (self.memory, self.visited)

    def _step_size(self, radius):
        if self.step_size is None:
            return 0.5 * radius
        return tf.cast(self.step_size, radius.dtype)

    def perturb(self, encoder, x, *, anchor, epsilon=None, seed=None, indices=None):
        if indices is None:
            return super().perturb(encoder, x, anchor=anchor, epsilon=epsilon, seed=seed)
        if self.memory is None:
            raise ValueError("PersistentPGD has no memory yet: call build(input_shape) first "
                             "(TARRLModel does when it is built)")
        x = tf.convert_to_tensor(x)
        radius = self._radius(epsilon, x.dtype)
        indices = tf.cast(indices, "int32")
        checks = [tf.debugging.assert_less(indices, self.num_examples,
                                           message=f"tarrl_tf: image indices must be < "
                                                   f"num_examples ({self.num_examples})"),
                  tf.debugging.assert_non_negative(indices, message="tarrl_tf: negative index")]
        with tf.control_dependencies(checks):
            visited = tf.gather(self.visited, indices)[:, None, None, None]
        remembered = tf.gather(self.memory, indices)
        fresh = random_in_ball(x, radius, self.norm, seed)
        start = x + tf.where(visited, remembered, fresh)
        x_adv = projected_gradient_ascent(
            lambda x_adv: self._divergence_sum(encoder, anchor, x_adv), x,
            epsilon=radius, norm=self.norm, steps=self.steps, step_size=self._step_size(radius),
            clip_min=self.clip_min, clip_max=self.clip_max, seed=seed,
            start=project(start, x, radius, self.norm, self.clip_min, self.clip_max))
        updates = [self.memory.scatter_nd_update(indices[:, None], x_adv - x),
                   self.visited.scatter_nd_update(indices[:, None],
                                                  tf.ones_like(indices, dtype=tf.bool))]
        with tf.control_dependencies(updates):
            return tf.identity(x_adv)

    def get_config(self):
        config = super().get_config()
        config.pop("random_start")
        config.update(num_examples=self.num_examples)
        return config
