"""The README's 2 x 2 sweep as a user runs it: four complete runs and one comparison table."""
from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest

from conftest import TINY, assert_run_dir, run_python

CELLS = {("strided", "cutout"), ("strided", "ricap"), ("dilated", "cutout"), ("dilated", "ricap")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_python(["train.py", "-m", "aug=cutout,ricap", "model=strided,dilated", *TINY,
                         f"hydra.sweep.dir={sweep_dir}"])
    return result, sweep_dir


def test_sweep_exits_cleanly(sweep) -> None:
    result, _ = sweep
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_run_is_complete_and_named_after_its_cell(sweep) -> None:
    _, sweep_dir = sweep
    runs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(runs) == 4
    cells = set()
    for run_dir in runs:
        metrics = assert_run_dir(run_dir)
        cell = (metrics["model"], metrics["aug"])
        assert run_dir.name == f"{metrics['job_num']}_{cell[0]}_{cell[1]}"  # hydra.sweep.subdir
        assert f"model={cell[0]}" in metrics["overrides"] and f"aug={cell[1]}" in metrics["overrides"]
        cells.add(cell)
    assert cells == CELLS


def test_summary_has_one_row_per_run(sweep) -> None:
    _, sweep_dir = sweep
    rows = list(csv.DictReader(io.StringIO((sweep_dir / "summary.csv").read_text())))
    assert len(rows) == 4
    for row in rows:
        metrics = json.loads((sweep_dir / row["run"] / "metrics.json").read_text())
        assert (row["model"], row["aug"]) == (metrics["model"], metrics["aug"])
        assert row["status"] == "ok" and float(row["test_acc"]) == pytest.approx(metrics["test_acc"])
    assert {(r["model"], r["aug"]) for r in rows} == CELLS
    table = [line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per run
    for row in rows:
        assert sum(line.startswith(f"| {row['run']} | {row['model']} | {row['aug']} |") for line in table) == 1


def test_summary_command_rebuilds_the_same_table(sweep) -> None:
    _, sweep_dir = sweep
    written = {name: (sweep_dir / name).read_text() for name in ("summary.csv", "summary.md")}
    for name in written:
        (sweep_dir / name).unlink()
    result = run_python(["-m", "cifar_lightning.summary", str(sweep_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: (sweep_dir / name).read_text() for name in written} == written
