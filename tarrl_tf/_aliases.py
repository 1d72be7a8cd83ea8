"""The module names of tarrl_tf 0.1.0, before the package had rooms, kept importable.

`import tarrl_tf.acl_model` and `from tarrl_tf.regularizers import PGD` keep
working: each old name is the module that now holds its code. `baselines`
is the one old module whose code was split; its names live on in a small
module built here. Old names not listed here are in the README ("Layout").
"""

import sys
import types

from tarrl_tf.evaluation import downstream, reports, tasks
from tarrl_tf.robustness import divergences, regularizers
from tarrl_tf.ssl import augment, losses, methods
from tarrl_tf.training import acl_model, base, deacl_model, pretraining, registry, supervised_at_model
from tarrl_tf.training import tarrl_model

MODULES = {
    "augment": augment,
    "losses": losses,
    "methods": methods,
    "divergences": divergences,
    "regularizers": regularizers,
    "tarrl_model": tarrl_model,
    "acl_model": acl_model,
    "deacl_model": deacl_model,
    "supervised_at_model": supervised_at_model,
    "pretraining": pretraining,
    "downstream": downstream,
    "tasks": tasks,
    "reports": reports,
}


def _baselines_module():
    module = types.ModuleType("tarrl_tf.baselines", "The baselines of tarrl_tf 0.1.0; now `tarrl_tf.training`.")
    module.BASELINES = registry.baselines()
    module.BaselineModel = base.BaselineModel
    module.build = registry.build_baseline
    return module


def install(package):
    """Makes every old module name an attribute of `package` and an entry of `sys.modules`."""
    modules = dict(MODULES, baselines=_baselines_module())
    for name, module in modules.items():
        setattr(package, name, module)
        sys.modules[f"{package.__name__}.{name}"] = module
