"""Mixed precision: the networks compute in bfloat16, everything else in float32.

Keras' global `mixed_bfloat16` policy cannot be used: it would also put the
augmentation in bfloat16, and `tf.image.crop_and_resize` rejects it. So the
policy is set on the layers of the networks a training model trains
(encoder, projector, head), for the duration of `fit` and `evaluate` only:

- every layer computes in bfloat16 except the networks' output layers, so
  features, projections and logits come out in float32 and the losses,
  divergences, `R`, the searches' objectives and the metrics are float32;
- variables stay float32 (Keras' mixed policies keep them so);
- outside `fit` and `evaluate` the layers have their own policies back, so a
  saved or exported encoder is the float32 model it was.

The attacks' search uses the same context (`AttackSpec.precision`,
`tarrl_tf.attacks.compiled`): it is entered while the attack is traced, so
the traced search computes in bfloat16 and the classifier itself never
changes; whether an image is misclassified is always decided in float32.
"""

import contextlib

import keras

MIXED_PRECISIONS = ("bfloat16",)


def check_mixed_precision(value):
    """`None` (float32 throughout) or a name of `MIXED_PRECISIONS`; "float32" means None."""
    if value in (None, "", "none", "float32"):
        return None
    if value not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISIONS)} or None "
                         f"(float32), got {value!r}")
    return value


@contextlib.contextmanager
def mixed_precision(networks, precision):
    """Within the block, the layers of `networks` compute in `precision`, their outputs in float32."""
    if precision is None:
        yield
        return
    layers = [layer for network in networks for layer in _computing_layers(network)]
    before = [layer.dtype_policy for layer in layers]
    for layer in layers:
        layer.dtype_policy = f"mixed_{precision}"
    try:
        yield
    finally:
        for layer, policy in zip(layers, before):
            layer.dtype_policy = policy


def _computing_layers(network):
    """The leaf layers of `network` that may compute in low precision (not its outputs)."""
    kept = _output_layers(network)
    return [layer for layer in _leaves(network)
            if layer not in kept and not isinstance(layer, keras.layers.InputLayer)]


def _leaves(layer):
    children = list(layer._flatten_layers(include_self=False, recursive=False))
    if not children:
        return [layer]
    return [leaf for child in children for leaf in _leaves(child)]


def _output_layers(network):
    """The leaf layers that produce `network`'s outputs, through nested models."""
    if not list(network._flatten_layers(include_self=False, recursive=False)):
        return [network]  # a single layer: its output is the network's output
    try:
        outputs = network.outputs
    except AttributeError:
        outputs = None
    if not outputs:
        raise ValueError(
            f"mixed precision needs functional or Sequential networks (their output layers stay "
            f"float32); {network.name!r} is a subclassed model with no known outputs")
    found = []
    for tensor in outputs:
        found += _output_layers(tensor._keras_history.operation)
    return found
