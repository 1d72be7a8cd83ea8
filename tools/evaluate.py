"""`python -m tools.evaluate` in a clone: the `tarrl-evaluate` command (see `tarrl_tf_cli/evaluate.py`)."""

from tarrl_tf_cli.evaluate import run

if __name__ == "__main__":
    run()
