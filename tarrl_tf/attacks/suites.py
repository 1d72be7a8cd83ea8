"""Suites: fixed sets of attacks whose per-image worst case is a report's headline robust accuracy.

| name       | attacks (per threat model)                                                    |
|------------|-------------------------------------------------------------------------------|
| `standard` | `apgd_ce` 100 it., `apgd_t` 100 it. x 9 targets, `square` 5,000 queries        |
| `quick`    | `apgd_ce` 25 it., `apgd_t` 25 it. x 3 targets, `square` 1,000 queries on the first 100 images |

`standard` is AutoAttack's "standard" version without FAB-T (not in ART; see
`art_attacks.py`); at L2 threat models both suites run the APGD attacks only
(ART's L2 Square is defective, see `art_attacks.py`). `quick` is for CI and ablations, never for published
numbers. `tools/evaluate.py --suite=`, the evaluation and the model card's
`headline` read the names from `SUITES`.
"""

import dataclasses

from tarrl_tf.attacks.registry import ATTACKS
from tarrl_tf.attacks.spec import make_attack
from tarrl_tf.registry import Registry

SUITES = Registry("suite")


@dataclasses.dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite.

    Attributes:
        name: a registered attack.
        settings: `make_attack` keywords beyond the radius (e.g. `steps`).
        subset: attack the first `subset` test examples only (None: all).
    """

    name: str
    settings: dict = dataclasses.field(default_factory=dict)
    subset: int = None


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named set of attacks, run at every threat model of a report."""

    name: str
    attacks: tuple

    def specs(self, norm, epsilon):
        """`[(AttackSpec, subset)]` of the suite's attacks that support `norm` (Square: L-inf)."""
        return [(make_attack(a.name, epsilon=epsilon, norm=norm, **a.settings), a.subset)
                for a in self.attacks if norm in ATTACKS.get(a.name).norms]

    def attack_names(self):
        return [a.name for a in self.attacks]


def register_suite(suite):
    """Adds a `Suite` to `SUITES`; returns it."""
    for attack in suite.attacks:  # fails now, not at the end of an evaluation
        make_attack(attack.name, epsilon=0.1, **attack.settings)
    return SUITES.register(suite.name, suite)


register_suite(Suite("standard", (
    SuiteAttack("apgd_ce"),
    SuiteAttack("apgd_t"),
    SuiteAttack("square"),
)))
register_suite(Suite("quick", (
    SuiteAttack("apgd_ce", {"steps": 25}),
    SuiteAttack("apgd_t", {"steps": 25, "target_classes": 3}),
    SuiteAttack("square", {"steps": 1000}, subset=100),
)))
