"""One adapter from Keras classifiers to attacks, with one record per attack.

The evaluation of this project attacks downstream classifiers (a frozen encoder
plus a plainly trained head). Every attack goes through this package, so the
settings, the label handling, the clip range and the input checks are the same
for the tools, the zoo checks and the tests.

Rooms: `registry.py` (the `Attack` record and `ATTACKS`), `spec.py`
(`AttackSpec`, `make_attack`), `run.py` (crafting and accuracies),
`compiled.py` (attacks built and traced once per classifier and settings),
`cleverhans_attacks.py` (the CleverHans attacks and their records; the table
of names and norms is there), `pgd.py` (CleverHans' PGD step in an in-graph
loop), `art_attacks.py` (AutoAttack's attacks from
IBM's Adversarial Robustness Toolbox), `suites.py` (`SUITES`: sets of attacks
whose per-image worst case is the headline), `compat.py` (Keras 3 shims for
CleverHans and ART).

Public attack names: `fgsm`, `pgd_linf`, `pgd_l2`, `bim`, `mim`, `cw_l2`,
`spsa` (CleverHans); `apgd_ce` (APGD on the cross-entropy), `apgd_t` (APGD on
AutoAttack's targeted DLR loss, 9 target classes; untargeted DLR with 3
classes, the logit margin with 2), `square` (Square, L-inf; gradient-free; ART's
L2 Square is defective, see `art_attacks.py`).
Suites: `standard` (`apgd_ce`, `apgd_t`, `square` at 5,000 queries: AutoAttack's
"standard" version without FAB-T, which ART does not have) and `quick`.

Example:
```python
from tarrl_tf import attacks

spec = attacks.make_attack("pgd_linf", epsilon=0.3)      # 40 steps of 0.01875, random start
x_adv = attacks.run_attack(classifier, x, y, spec, seed=0)
rows = attacks.evaluate_attacks(
    classifier, x, y,
    [attacks.make_attack("fgsm", epsilon=0.3), spec,
     attacks.make_attack("spsa", epsilon=0.3, steps=10)],
    seed=0,
)
# rows[1] == {"name": "pgd_linf", "norm": "inf", "epsilon": 0.3, "steps": 40,
#             "step_size": 0.01875, "random_start": True, "restarts": 1,
#             "robust_accuracy": ..., "num_examples": ...}
```
"""

from tarrl_tf.attacks import art_attacks, cleverhans_attacks  # noqa: F401 (registers the attacks)
from tarrl_tf.attacks.registry import ATTACKS, Attack, register  # noqa: F401
from tarrl_tf.attacks.run import (  # noqa: F401
    clean_accuracy,
    evaluate_attacks,
    robust_accuracy,
    run_attack,
)
from tarrl_tf.attacks.spec import AttackSpec, make_attack  # noqa: F401
from tarrl_tf.attacks.suites import SUITES, Suite, SuiteAttack, register_suite  # noqa: F401

# The names are a public contract (`tools/evaluate.py --attacks=`, reports, cards).
ATTACK_NAMES = ATTACKS.names()
SUITE_NAMES = SUITES.names()
