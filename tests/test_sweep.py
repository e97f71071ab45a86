"""The README's 2 x 2 sweep as a user runs it: four complete runs and one comparison table.

The sweep itself is the session's ``sweep_2x2`` (conftest.py), which test_artefacts.py reads too.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from cifar_lightning.cli import summary
from conftest import SWEEP_CELLS, assert_run_dir


def test_sweep_exits_cleanly(sweep_2x2) -> None:
    result, _ = sweep_2x2
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_run_is_complete_and_named_after_its_cell(sweep_2x2) -> None:
    _, sweep_dir = sweep_2x2
    runs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(runs) == 4
    cells = set()
    for run_dir in runs:
        metrics = assert_run_dir(run_dir)
        cell = (metrics["model"], metrics["aug"])
        assert run_dir.name == f"{metrics['job_num']}_{cell[0]}_{cell[1]}"  # hydra.sweep.subdir
        assert f"model={cell[0]}" in metrics["overrides"] and f"aug={cell[1]}" in metrics["overrides"]
        cells.add(cell)
    assert cells == SWEEP_CELLS


def test_summary_has_one_row_per_run(sweep_2x2) -> None:
    _, sweep_dir = sweep_2x2
    rows = list(csv.DictReader(io.StringIO((sweep_dir / "summary.csv").read_text())))
    assert len(rows) == 4
    for row in rows:
        metrics = json.loads((sweep_dir / row["run"] / "metrics.json").read_text())
        assert (row["model"], row["aug"]) == (metrics["model"], metrics["aug"])
        assert row["status"] == "ok" and float(row["test_acc"]) == pytest.approx(metrics["test_acc"])
    assert {(r["model"], r["aug"]) for r in rows} == SWEEP_CELLS
    table = [line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per run
    for row in rows:
        assert sum(line.startswith(f"| {row['run']} | {row['model']} | {row['aug']} |") for line in table) == 1


def test_summary_command_rebuilds_the_same_table(sweep_2x2, tmp_path: Path, monkeypatch, capsys) -> None:
    """``python -m cifar_lightning.cli.summary <sweep_dir>``, called in-process (its main() reads sys.argv)."""
    _, original = sweep_2x2
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(original, sweep_dir)
    written = {name: (sweep_dir / name).read_text() for name in ("summary.csv", "summary.md")}
    for name in written:
        (sweep_dir / name).unlink()
    monkeypatch.setattr(sys, "argv", ["summary", str(sweep_dir)])
    with pytest.raises(SystemExit) as exit_status:
        summary.main()
    assert exit_status.value.code == 0
    assert {name: (sweep_dir / name).read_text() for name in written} == written
    assert written["summary.md"] in capsys.readouterr().out
