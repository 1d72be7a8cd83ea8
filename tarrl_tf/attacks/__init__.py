"""One adapter from Keras classifiers to attacks, with one record per attack.

The evaluation of this project attacks downstream classifiers (a frozen encoder
plus a plainly trained head). Every attack goes through this package, so the
settings, the label handling, the clip range and the input checks are the same
for the tools, the zoo checks and the tests.

Rooms: `registry.py` (the `Attack` record and `ATTACKS`), `spec.py`
(`AttackSpec`, `make_attack`), `run.py` (crafting and accuracies),
`cleverhans_attacks.py` (the CleverHans attacks and their records; the table
of names and norms is there), `compat.py` (Keras 3 shims for CleverHans).

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

from tarrl_tf.attacks import cleverhans_attacks  # noqa: F401 (registers the attacks)
from tarrl_tf.attacks.registry import ATTACKS, Attack, register  # noqa: F401
from tarrl_tf.attacks.run import (  # noqa: F401
    clean_accuracy,
    evaluate_attacks,
    robust_accuracy,
    run_attack,
)
from tarrl_tf.attacks.spec import AttackSpec, make_attack  # noqa: F401

# The names are a public contract (`tools/evaluate.py --attacks=`, reports, cards).
ATTACK_NAMES = ATTACKS.names()
