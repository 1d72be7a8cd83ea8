"""`python -m tools.pretrain` in a clone: the `tarrl-pretrain` command (see `tarrl_tf_cli/pretrain.py`)."""

from tarrl_tf_cli.pretrain import run

if __name__ == "__main__":
    run()
