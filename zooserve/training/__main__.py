"""`python -m zooserve.training train NAME` and `python -m zooserve.training results`, as
in zooserve."""

import argparse
import sys

from zooserve.training.cli import add_training_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zooserve.training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_training_commands(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
