"""Exporting encoders for TF Serving and writing zoo entries: the public face of `tarrl_tf.zoo`'s writers.

The code lives in `tarrl_tf.zoo.serving` (SavedModels, `models.config`, REST
bodies), `tarrl_tf.zoo.card` (model cards) and `tarrl_tf.zoo.publish` (zoo
entries); see those modules for the contract.

Example:
```python
from tarrl_tf import export
version_dir = export.export_serving(encoder, "/srv/models/mnist_cnn", head=linear_head)
export.write_models_config("/srv/models")      # /srv/models/models.config
export.create_zoo_entry(
    encoder, name="mnist_cnn_tarrl_linf03", dataset="mnist", architecture="small_cnn",
    method="tarrl", regularizer={"weight": 1.0, "estimator": "pgd", "steps": 5},
    threat_model={"norm": "linf", "epsilon": 0.3},
    training={"epochs": 50, "batch_size": 256, "wall_clock_seconds": 5400.0},
    metrics=[{"head": "linear_probe", "clean_accuracy": 0.97, "robust_accuracy": 0.81,
              "num_examples": 10000,
              "attack": {"name": "pgd", "norm": "linf", "epsilon": 0.3, "step_size": 0.01,
                         "steps": 40, "random_start": True}}],
    head=linear_head, head_name="linear_probe")
```
"""

from tarrl_tf.zoo.card import card_metrics, write_model_card  # noqa: F401
from tarrl_tf.zoo.publish import create_zoo_entry  # noqa: F401
from tarrl_tf.zoo.serving import (  # noqa: F401
    MODELS_CONFIG_FILENAME,
    SERVING_SIGNATURE,
    export_serving,
    published_versions,
    rest_request,
    validate_model_name,
    write_models_config,
)
