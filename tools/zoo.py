"""`python -m tools.zoo` in a clone: the `tarrl-zoo` command (see `tarrl_tf_cli/zoo.py`)."""

from tarrl_tf_cli.zoo import run

if __name__ == "__main__":
    run()
