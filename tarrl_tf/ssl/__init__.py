"""Self-supervised learning: random views, objectives, and the methods that pair a projector with one."""

from tarrl_tf.ssl import augment, losses, methods  # noqa: F401
