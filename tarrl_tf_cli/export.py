r"""Exports a `.keras` encoder (and optional head) for TF Serving.

Writes `<serving_dir>/<model_name>/<version>/` (a SavedModel with the
`serving_default` signature: `images` -> `embedding`, plus `classify`:
`images` -> `logits`, `probabilities` when a head is given) and rewrites
`<serving_dir>/models.config` to list every model folder in `serving_dir`.

Examples (`python -m tools.export` in a clone):

    tarrl-export --encoder=runs/pretrain/tarrl/encoder.keras --serving_dir=serving \
        --model_name=digits_tarrl

    tarrl-export --encoder=encoder.keras --head=linear_probe.keras \
        --serving_dir=/srv/models --model_name=mnist_cnn_tarrl --version=7 \
        --base_path_prefix=/models

    # then, e.g.:
    tensorflow_model_server --rest_api_port=8501 \
        --model_config_file=/srv/models/models.config
    curl -d '{"signature_name": "serving_default", "instances": [...]}' \
        http://localhost:8501/v1/models/mnist_cnn_tarrl:predict
"""

import sys

from absl import app, flags

from tarrl_tf_cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_string("encoder", None, "Path of the encoder `.keras` file.", required=True)
flags.DEFINE_string("head", None, "Optional `.keras` head mapping embeddings to logits.")
flags.DEFINE_string(
    "serving_dir", None, "Folder of model folders (TF Serving's model root).", required=True
)
flags.DEFINE_string("model_name", None, "Model name (folder and TF Serving name).", required=True)
flags.DEFINE_integer("version", None, "Version to publish; default: latest + 1.", lower_bound=1)
flags.DEFINE_string(
    "models_config", None, "Where to write models.config; default <serving_dir>/models.config."
)
flags.DEFINE_string(
    "base_path_prefix",
    None,
    "Path of serving_dir as the server sees it (e.g. /models in a container); "
    "default its absolute local path.",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every option is a --flag")
    startup.library()
    import keras

    from tarrl_tf import export, files

    # Bad names, files or models: one `error:` line and status 2 (startup), before any writing.
    export.validate_model_name(FLAGS.model_name)
    encoder = keras.models.load_model(files.check_keras_file(FLAGS.encoder), compile=False,
                                      safe_mode=True)
    head = None
    if FLAGS.head:
        head = keras.models.load_model(files.check_keras_file(FLAGS.head), compile=False,
                                       safe_mode=True)
    version_dir = export.export_serving(
        encoder, f"{FLAGS.serving_dir}/{FLAGS.model_name}", head=head, version=FLAGS.version)
    config = export.write_models_config(
        FLAGS.serving_dir, config_path=FLAGS.models_config,
        base_path_prefix=FLAGS.base_path_prefix)
    print(f"exported {version_dir}")
    print(f"wrote {config}")
    startup.summary([f"{version_dir}/ (SavedModel)", config])
    return 0


def run():
    """The `tarrl-export` command."""
    startup.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
