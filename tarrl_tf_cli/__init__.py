"""The command-line programs of tarrl_tf, installed as console commands.

| command          | program                       | in a clone, also          |
|------------------|-------------------------------|---------------------------|
| `tarrl-pretrain` | `tarrl_tf_cli/pretrain.py`    | `python -m tools.pretrain` |
| `tarrl-evaluate` | `tarrl_tf_cli/evaluate.py`    | `python -m tools.evaluate` |
| `tarrl-export`   | `tarrl_tf_cli/export.py`      | `python -m tools.export`   |
| `tarrl-zoo`      | `tarrl_tf_cli/zoo.py`         | `python -m tools.zoo`      |

A package of its own beside `tarrl_tf`, because `import tarrl_tf` imports
TensorFlow (several seconds): each program defines and parses its flags
with nothing but absl loaded, so `--help` and flag mistakes answer at once,
and imports the library only then (`startup.library()`). Flags that name
registered parts (`--estimator`, `--architecture`, ...) are plain strings
checked against the registries after parsing: the registries stay the only
lists. `tarrl_tf` never imports this package (tested).
"""
