"""The sweep's comparison table, built from hand-made job directories (no training): one row per job,
killed jobs included, each value under its own header, failures named and turned into exit status 1.

The README's real 2 x 2 sweep and its table are checked end to end in test_sweep.py.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from cifar_lightning import sweeps
from cifar_lightning.cli import summary
from cifar_lightning.errors import RunDirError

# Every column distinct, so a value written under another column's header shows.
FINISHED = {"status": "ok", "model": "strided", "aug": "ricap", "job_num": 0, "params": 54_450,
            "best_val_acc": 0.5, "test_acc": 0.75, "epochs": 3, "wall_time_s": 12.3,
            "train_images_per_sec": 101.5, "overrides": ["data=synthetic", "model=strided", "aug=ricap", "lr=0.0123456"]}
FAILED = {"status": "failed", "model": "dilated", "aug": "cutout", "job_num": 1,
          "overrides": ["data=synthetic", "model=dilated", "aug=cutout", "lr=-1"], "error": "ConfigError: lr=-1 | must be > 0"}


def make_job(sweep_dir: Path, name: str, metrics: dict[str, Any] | None) -> None:
    """A job directory as Hydra leaves it (``.hydra/``), with ``metrics.json`` unless the job was killed."""
    (sweep_dir / name / ".hydra").mkdir(parents=True)
    if metrics is not None:
        (sweep_dir / name / "metrics.json").write_text(json.dumps(metrics))


def markdown_rows(markdown: str) -> list[dict[str, str]]:
    """summary.md's table as one {header: cell} per row (a ``\\|`` inside a cell stays in it)."""
    def cells(line: str) -> list[str]:
        return [c.strip().replace("\0", "|") for c in line.replace("\\|", "\0").strip("|").split("|")]

    header, _, *rows = (line for line in markdown.splitlines() if line.startswith("|"))
    return [dict(zip(cells(header), cells(row), strict=True)) for row in rows]


def test_a_killed_job_is_a_failed_row_and_fails_the_sweep(tmp_path: Path, capsys) -> None:
    """A job killed by the scheduler leaves ``.hydra/`` but no metrics.json: it must not vanish from the table."""
    make_job(tmp_path, "0_strided_ricap", FINISHED)
    make_job(tmp_path, "1_dilated_cutout", None)
    rows = sweeps.write_summary(tmp_path)
    assert [(r["run"], r["status"]) for r in rows] == [("0_strided_ricap", "ok"), ("1_dilated_cutout", "failed")]
    assert "killed" in rows[1]["error"]
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert [(r["run"], r["status"]) for r in csv_rows] == [("0_strided_ricap", "ok"), ("1_dilated_cutout", "failed")]
    table = markdown_rows((tmp_path / "summary.md").read_text())
    assert [(r["run"], r["status"]) for r in table] == [("0_strided_ricap", "ok"), ("1_dilated_cutout", "failed")]

    assert sweeps.report_failures(rows, tmp_path / "summary.md") == 1
    err = capsys.readouterr().err
    assert "error: run 1_dilated_cutout failed: no metrics.json" in err and "1 of 2 runs failed" in err


def test_a_sweep_without_failures_exits_zero(tmp_path: Path, capsys) -> None:
    make_job(tmp_path, "0_strided_ricap", FINISHED)
    assert sweeps.report_failures(sweeps.collect(tmp_path), tmp_path / "summary.md") == 0
    assert capsys.readouterr().err == ""


def test_rows_come_in_job_order(tmp_path: Path) -> None:
    """By job number, not by name (``10_...`` sorts before ``2_...``; a ``hydra.sweep.subdir`` of override
    names sorts in no job order at all); jobs without one last."""
    for num in (10, 2, 0):
        make_job(tmp_path, f"{num}_strided_ricap", {**FINISHED, "job_num": num})
    make_job(tmp_path, "a_killed", None)
    assert [r["run"] for r in sweeps.collect(tmp_path)] == ["0_strided_ricap", "2_strided_ricap",
                                                             "10_strided_ricap", "a_killed"]

    by_overrides = tmp_path / "by_overrides"
    for num, name in ((0, "lr=0.2"), (1, "lr=0.05"), (2, "lr=0.1")):
        make_job(by_overrides, name, {**FINISHED, "job_num": num})
    assert [r["run"] for r in sweeps.collect(by_overrides)] == ["lr=0.2", "lr=0.05", "lr=0.1"]


def test_a_sweep_whose_jobs_were_all_killed_still_gets_its_table(tmp_path: Path) -> None:
    """No run left overrides to compare: every row is a failure with nothing swept, not a crash."""
    make_job(tmp_path, "0", None)
    make_job(tmp_path, "1", None)
    rows = sweeps.write_summary(tmp_path)
    assert [(r["run"], r["status"], r["swept"]) for r in rows] == [("0", "failed", ""), ("1", "failed", "")]
    assert [r["status"] for r in markdown_rows((tmp_path / "summary.md").read_text())] == ["failed", "failed"]


def test_each_value_is_under_its_own_header() -> None:
    rows = sweeps.with_swept([sweeps.with_reference({"run": "0_strided_ricap", **FINISHED}),
                               sweeps.with_reference({"run": "1_dilated_cutout", **FAILED})])
    finished, failed = markdown_rows(sweeps.to_markdown(rows))
    assert finished == {
        "run": "0_strided_ricap", "model": "strided", "aug": "ricap", "swept overrides": "model=strided aug=ricap lr=0.01235", "params": "54450",
        "best val acc (%)": "50.00", "test acc (%)": "75.00", "study's acc (%)": "87.62",
        "test - study (pp)": "-12.62", "epochs": "3", "wall time (s)": "12.3", "train img/s": "101.5",
        "status": "ok", "error": ""}
    assert failed["swept overrides"] == "model=dilated aug=cutout lr=-1" and failed["test acc (%)"] == "" and failed["study's acc (%)"] == "79.92"
    assert failed["error"] == "ConfigError: lr=-1 | must be > 0"  # escaped: one cell, the row keeps its columns

    [csv_row, _] = csv.DictReader(io.StringIO(sweeps.to_csv(rows)))
    assert csv_row["swept"] == "model=strided aug=ricap lr=0.0123456" and float(csv_row["vs_reference_acc"]) == 0.75 - 0.8762


def test_a_gain_over_the_study_is_signed_and_only_decimal_overrides_are_rounded() -> None:
    """``+`` marks a run that beats the study; an integer, or a string that holds ``=`` and a number, is shown
    as written (rounding is for the long decimals a search samples). The separator row makes it a markdown table."""
    beat = {**FINISHED, "aug": "cutout", "job_num": 1, "test_acc": 0.9,
            "overrides": ["data=synthetic", "model=strided", "aug=cutout", "seed=12345", "+tag=lr=0.0123456",
                          "lr=0.0987654"]}
    rows = sweeps.with_swept([sweeps.with_reference({"run": "0", **FINISHED}), sweeps.with_reference({"run": "1", **beat})])
    markdown = sweeps.to_markdown(rows)
    assert markdown.splitlines()[1] == "|" + "---|" * 14
    _, row = markdown_rows(markdown)
    assert row["test - study (pp)"] == "+2.69" and row["study's acc (%)"] == "87.31"
    assert row["swept overrides"] == "aug=cutout seed=12345 +tag=lr=0.0123456 lr=0.09877"


def test_the_command_and_the_multirun_callback_write_the_table_and_exit_1_on_a_failure(tmp_path: Path, monkeypatch,
                                                                                        capsys) -> None:
    """``python -m cifar_lightning.cli.summary <dir>`` (main() reads sys.argv) and the Hydra callback a sweep ends with."""
    make_job(tmp_path, "0_strided_ricap", FINISHED)
    make_job(tmp_path, "1_dilated_cutout", None)
    monkeypatch.setattr("sys.argv", ["summary", str(tmp_path)])
    with pytest.raises(SystemExit) as command:
        summary.main()
    table = (tmp_path / "summary.md").read_text()
    assert command.value.code == 1 and table in capsys.readouterr().out
    (tmp_path / "summary.md").unlink()

    with pytest.raises(SystemExit) as callback:
        sweeps.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out, err = capsys.readouterr()
    assert callback.value.code == 1 and (tmp_path / "summary.md").read_text() == table
    assert f"Sweep summary (2 runs): {tmp_path / 'summary.md'}" in out and table in out
    assert f"1 of 2 runs failed; see {tmp_path / 'summary.md'}" in err
    assert "Re-train" not in out  # a grid sweep: no search, no best trial


# A finished search: Hydra's record of a trial (its config group choices and its command line, the sampled
# values included) and the Optuna sweeper's best parameters. One searched value is a path holding "=", as
# the directories of hydra.job.override_dirname do.
TRIAL_CHOICES = {"hparams_search": "ricap_optuna", "model": "strided", "aug": "ricap", "module": "default",
                 "module/optimizer": "sgd", "module/distill": "kd", "callbacks": "ema", "data": "synthetic",
                 "trainer": "default", "hydra/sweeper": "optuna"}
TRIAL_OVERRIDES = ["hparams_search=ricap_optuna", "data=synthetic", "trainer.max_epochs=1", "model=strided",
                   "module/distill=kd", "++callbacks.ema.update_starting_at_step=0",
                   "module.distill.teacher=runs/lr=0.1/model.pt2", "module.optimizer.lr=0.0412", "aug.beta=0.3",
                   "data.batch_size=128"]
BEST_PARAMS = {"module.distill.teacher": "runs/lr=0.2/model.pt2", "module.optimizer.lr": 0.0321, "aug.beta": 0.7,
               "data.batch_size": 256}


def make_search(sweep_dir: Path) -> None:
    """A finished search of one trial, as Hydra and its Optuna sweeper leave it."""
    make_job(sweep_dir, "0", {**FINISHED, "overrides": TRIAL_OVERRIDES})
    hydra_dir = sweep_dir / "0" / ".hydra"
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": TRIAL_CHOICES}}}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(TRIAL_OVERRIDES), hydra_dir / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": BEST_PARAMS, "best_value": 0.5}),
                   sweep_dir / "optimization_results.yaml")


def test_best_overrides_repeat_the_trials_recipe_with_the_best_parameters(tmp_path: Path, capsys) -> None:
    """The recipe's group choices, then the trials' command-line settings under the recipe's groups (``++``
    prefixed, a nested group such as module/distill), each searched one replaced in place by its best value;
    not the search config, nor data or trainer settings that were not searched. The search's end prints them."""
    make_search(tmp_path)
    retrain = ["model=strided", "aug=ricap", "module/optimizer=sgd", "callbacks=ema", "module/distill=kd",
               "++callbacks.ema.update_starting_at_step=0", "module.distill.teacher=runs/lr=0.2/model.pt2",
               "module.optimizer.lr=0.0321", "aug.beta=0.7", "data.batch_size=256"]
    assert sweeps.best_overrides(tmp_path) == retrain

    sweeps.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out = capsys.readouterr().out
    assert f"Re-train its best trial at the full budget:\n  python train.py {' '.join(retrain)}\n" in out


def test_best_overrides_of_an_unfinished_search_name_the_fix(tmp_path: Path) -> None:
    make_job(tmp_path, "0", None)
    with pytest.raises(RunDirError) as error:
        sweeps.best_overrides(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'optimization_results.yaml'} not found: the search has not finished "
                                "(or is no Optuna search); pass the sweep directory of a finished hparams_search run")
