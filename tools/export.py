"""`python -m tools.export` in a clone: the `tarrl-export` command (see `tarrl_tf_cli/export.py`)."""

from tarrl_tf_cli.export import run

if __name__ == "__main__":
    run()
