"""Recipes: how the epochs of a TARRL run are laid out, one record each.

| name        | what it trains                                                | use it for                  |
|-------------|---------------------------------------------------------------|-----------------------------|
| `scratch`   | SSL + weight x R from random weights, every epoch             | small encoders on simple    |
|             |                                                               | images (MNIST, Fashion-MNIST)|
| `two_stage` | plain SSL first, then SSL + weight x R started from it for    | natural images (the CIFAR   |
|             | `second_stage_epochs`, its features kept near the first       | ResNet)                     |
|             | stage's (`keep_weight`, default 10)                           |                             |

Why two stages on natural images: from scratch, R flattens the representation
before the contrastive loss has shaped it, and the SSL part suffers (the
CIFAR-10 proxy search in RESULTS.md: the most robust and the least accurate
encoders). Started from a trained SimCLR encoder, a few epochs of R keep its
geometry, and the keep term holds the clean features the first stage learned
(at zoo scale it bought clean accuracy on both CIFAR-10 tasks and robustness on
`animals_vehicles`). Either recipe needs R and the SSL loss under the same
BatchNorm statistics (`TARRLModel`'s `shared_statistics`, on by default with
batch statistics): without it, R flattens the training-mode function while the
attacked inference-mode one stays sharp. On MNIST, training from scratch already
gives the zoo's numbers, and the first stage would be cost for nothing; on
Fashion-MNIST two stages traded robustness for clean accuracy at half the time,
with no robustness gain, so its zoo row stays from scratch (RESULTS.md).
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
        keep_weight: the default weight of the term that keeps the second
            stage's features near the first stage's (`TARRLModel`'s
            `keep_weight`; 0: none, the only choice without a first stage).
    """

    name: str
    first_stage: bool
    summary: str
    keep_weight: float = 0.0


RECIPES.register("scratch", Recipe("scratch", False, "SSL + weight x R from random weights"))
# keep_weight 10 with weight 30: at zoo scale the only second stage found that is more robust
# than `acl` on both CIFAR-10 tasks under the attack suite (RESULTS.md, shared statistics).
RECIPES.register("two_stage", Recipe(
    "two_stage", True, "plain SSL first, then SSL + weight x R started from it, kept near it",
    keep_weight=10.0))

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
