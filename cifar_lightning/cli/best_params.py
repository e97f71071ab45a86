"""Print the overrides that re-train a search's best trial at the full budget:

    python train.py $(python -m cifar_lightning.cli.best_params <sweep_dir>)

What they hold and why: :func:`cifar_lightning.sweeps.best_overrides`.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.sweeps import best_overrides


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.cli.best_params",
                                     description="Print the overrides that re-train a search's best trial.")
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(" ".join(best_overrides(args.sweep_dir)))


if __name__ == "__main__":
    main()
