"""Rebuild a sweep's comparison table (``summary.csv``, ``summary.md``, ``summary_curves.png``):

    python -m cifar_lightning.cli.summary <sweep_dir>

Exits 1 if any run of the sweep failed (each is named on stderr); the table is built by
:mod:`cifar_lightning.sweeps`, as the sweep's own end does.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.sweeps import report_failures, to_markdown, write_summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.cli.summary",
                                     description="Rebuild summary.csv/summary.md of a sweep directory.")
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        rows = write_summary(args.sweep_dir)
    print(to_markdown(rows))
    sys.exit(report_failures(rows, Path(args.sweep_dir) / "summary.md"))


if __name__ == "__main__":
    main()
