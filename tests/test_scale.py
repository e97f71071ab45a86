"""Scaling out: concurrent sweep jobs (joblib), SLURM (submitit) presets, and DDP on two CPU processes.

The joblib sweep and the DDP-inside-a-multirun sweep start many processes (minutes on two cores):
they are marked ``slow`` and run with ``python -m pytest -m slow``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities import rank_zero_only

from cifar_lightning import training
from cifar_lightning.strategies import SpawnDDPStrategy, _ReportingLauncher
from conftest import TINY, assert_run_dir, compose_hydra, run_python


def job_span(run_dir: Path) -> tuple[float, float]:
    """When a job ran: Hydra writes its .hydra/config.yaml first, run() its metrics.json last."""
    return (run_dir / ".hydra" / "config.yaml").stat().st_mtime, (run_dir / "metrics.json").stat().st_mtime


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_slurm_preset_asks_one_task_and_one_gpu_per_device() -> None:
    cfg = compose_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                         "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30"])
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.timeout_min == 30
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # follows trainer.devices
    assert compose_hydra(["hydra/launcher=slurm"]).hydra.launcher.tasks_per_node == 1
    # On SLURM, Lightning joins the tasks SLURM started: the strategy is overridden to ddp.
    assert compose_hydra(["trainer=ddp", "trainer.strategy=ddp"]).trainer.strategy == "ddp"


def test_joblib_launcher_composes_with_n_jobs() -> None:
    launcher = compose_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]).hydra.launcher
    assert get_class(launcher._target_).__name__ == "JoblibLauncher"
    assert launcher.n_jobs == 3


def test_trainer_ddp_spawns_two_reporting_workers(compose_task, tmp_path: Path) -> None:
    cfg = compose_task(["trainer=ddp", "trainer.accelerator=cpu"], output_dir=tmp_path)
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, SpawnDDPStrategy)
    assert trainer.num_devices == 2 and trainer.strategy.root_device.type == "cpu"
    assert isinstance(trainer.strategy.launcher, _ReportingLauncher)


@pytest.mark.parametrize("rank, written", [(0, True), (1, False)])
def test_only_global_rank_zero_writes_metrics(rank: int, written: bool, compose_task, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_task(["data=synthetic"], output_dir=tmp_path)
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    monkeypatch.setattr(training, "start", lambda cfg: ())
    finished = {"status": "ok", "best_val_acc": 0.5, "test_acc": 0.6, "test_loss": 1.0, "params": 1, "epochs": 1,
                "wall_time_s": 1.0}
    monkeypatch.setattr(training, "train", lambda cfg, started: finished)
    assert training.run(cfg) == 0.5
    assert (tmp_path / "metrics.json").exists() == written

    def fail(cfg, started):
        raise RuntimeError("boom")

    (tmp_path / "metrics.json").unlink(missing_ok=True)
    monkeypatch.setattr(training, "train", fail)
    with pytest.raises(RuntimeError):
        training.run(cfg)
    assert (tmp_path / "metrics.json").exists() == written


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_concurrently_and_writes_the_summary(tmp_path: Path) -> None:
    # data.num_workers=1: DataLoader workers inside loky workers (pytorch#44687) must start.
    result = run_python(["train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "aug=none,cutout",
                         *TINY, "data.num_workers=1", f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(tmp_path)
    assert [(r["aug"], r["status"]) for r in rows] == [("none", "ok"), ("cutout", "ok")], rows
    for row in rows:
        assert_run_dir(tmp_path / row["run"])  # the ${pixels:} resolver and the datamodule worked in the workers
    (start0, end0), (start1, end1) = (job_span(tmp_path / r["run"]) for r in rows)
    assert max(start0, start1) < min(end0, end1), "the two jobs did not overlap in time"


@pytest.mark.slow
def test_ddp_spawn_inside_a_multirun(tmp_path: Path) -> None:
    # Lightning #11300: strategy=ddp would re-run the whole sweep in each worker; trainer=ddp spawns.
    result = run_python(["train.py", "-m", "trainer=ddp", "aug=none,cutout", *TINY, f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(tmp_path)
    assert [(r["aug"], r["status"]) for r in rows] == [("none", "ok"), ("cutout", "ok")], rows
    assert sorted(p.parent.name for p in tmp_path.glob("**/metrics.json")) == [r["run"] for r in rows]
    for row in rows:
        metrics = assert_run_dir(tmp_path / row["run"])
        # What train() reads from the trainer after fit came back from the spawned rank 0.
        assert metrics["epochs"] == 1 and metrics["best_val_acc"] is not None
        assert metrics["train_images_per_sec"] > 0 and Path(metrics["checkpoint"]).is_file()


def test_ddp_relaunched_single_run(tmp_path: Path) -> None:
    # strategy=ddp (what SLURM runs): Lightning re-launches train.py as rank 1 into the same run dir.
    result = run_python(["train.py", "trainer=ddp", "trainer.strategy=ddp", *TINY, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = assert_run_dir(tmp_path)
    assert metrics["epochs"] == 1 and metrics["best_val_acc"] is not None
    assert (tmp_path / "train_ddp_process_1.log").is_file()  # rank 1 ran train.py too


def test_ddp_shares_the_device_resident_data_between_ranks(tmp_path: Path) -> None:
    # data=cifar10_gpu is no DataLoader, so no DistributedSampler: each rank must take its own half itself.
    overrides = [o for o in TINY if o != "data=synthetic"] + ["data=cifar10_gpu", "data/source=synthetic"]
    result = run_python(["train.py", "trainer=ddp", *overrides, "++trainer.limit_train_batches=1.0",
                         "logger=[tensorboard,csv]", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = assert_run_dir(tmp_path)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:  # fit and test ran in two spawned processes
        rows = list(csv.DictReader(f))
    assert any(r["train/loss_epoch"] for r in rows)
    assert [float(r["test/acc"]) for r in rows if r["test/acc"]] == [pytest.approx(metrics["test_acc"])]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 1  # 32 training images, 2 ranks x batch 16: one step (two unshared)
