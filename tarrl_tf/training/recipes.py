"""Recipes: how the epochs of a TARRL run are laid out, one record each.

| name        | what it trains                                                | use it for                  |
|-------------|---------------------------------------------------------------|-----------------------------|
| `scratch`   | SSL + weight x R from random weights, every epoch             | small encoders on simple    |
|             |                                                               | images (MNIST, Fashion-MNIST)|
| `two_stage` | plain SSL first, then SSL + weight x R started from it for    | natural images (the CIFAR   |
|             | `second_stage_epochs`                                         | ResNet)                     |

Why two stages on natural images: from scratch, R flattens the representation
before the contrastive loss has shaped it, and the SSL part suffers (the
CIFAR-10 proxy search in RESULTS.md: the most robust and the least accurate
encoders). Started from a trained SimCLR encoder, a few epochs of R keep its
geometry, at less cost than adversarial contrastive learning. On MNIST, training
from scratch already gives the zoo's numbers, and the first stage would be cost
for nothing.
"""

import dataclasses

from tarrl_tf.registry import Registry

RECIPES = Registry("recipe")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a TARRL run is trained.

    Attributes:
        name: the registered name.
        first_stage: train plain SSL first and start the regularized run from it.
        summary: one line for `--help` and the docs.
    """

    name: str
    first_stage: bool
    summary: str


RECIPES.register("scratch", Recipe("scratch", False, "SSL + weight x R from random weights"))
RECIPES.register("two_stage", Recipe(
    "two_stage", True, "plain SSL first, then SSL + weight x R started from it"))

# Architectures for natural images, where the two stages won the CIFAR-10 search.
TWO_STAGE_ARCHITECTURES = ("cifar_resnet",)


def default_recipe(architecture):
    """The recipe for an encoder architecture: `two_stage` for the CIFAR ResNet, else `scratch`."""
    return "two_stage" if architecture in TWO_STAGE_ARCHITECTURES else "scratch"


def second_stage_epochs(epochs, requested=None):
    """Epochs of the regularized stage: `requested`, or a third of the first stage's (at least 1).

    The CIFAR-10 search's two-stage run took 5 epochs after 15 of SimCLR.
    """
    if requested is None:
        return max(1, round(epochs / 3))
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"second_stage_epochs must be a positive integer, got {requested!r}")
    return requested
