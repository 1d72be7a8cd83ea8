"""Training models (TARRL and the baselines), the registry of training methods, and one run.

Importing this package registers every method in `registry.METHODS`.
"""

from tarrl_tf.training import base, distribute, registry  # noqa: F401
from tarrl_tf.training.acl_model import ACLModel  # noqa: F401
from tarrl_tf.training.deacl_model import DeACLModel  # noqa: F401
from tarrl_tf.training.supervised_at_model import SupervisedATModel  # noqa: F401
from tarrl_tf.training.tarrl_model import TARRLModel  # noqa: F401
from tarrl_tf.training import pretraining  # noqa: F401, E402
from tarrl_tf.training.registry import METHODS, build  # noqa: F401
