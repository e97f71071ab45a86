"""End to end: every model x aug trains and tests, ``train.py`` works as a command, and what a run logs is right.

(A missing dataset's one-line message on the command line is checked with the other user errors
in test_reliability.py.)"""
from __future__ import annotations

import copy
import csv
import json
import math
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cifar_lightning import training
from cifar_lightning.export import load_exported
from cifar_lightning.loggers import CSV
from cifar_lightning.module import ClassifierModule
from conftest import TINY, assert_run_dir, compose_hydra, options, run_python


@pytest.mark.parametrize("aug", options("aug"))
@pytest.mark.parametrize("model", options("model"))
def test_every_model_and_aug_trains_and_tests(model: str, aug: str, compose_task, monkeypatch,
                                              tmp_path: Path) -> None:
    """One batch of fit, validation and test through ``run()`` (fast_dev_run: no checkpoint to reload).

    The export depends on the model only and costs more than the rest of this run, so here it is
    only checked to receive the trained net; test_export.py and the command runs below export for real.
    """
    exported = []
    monkeypatch.setattr(training, "export_model", lambda net, path, **_: exported.append((net, Path(path))))
    cfg = compose_task([*TINY, f"model={model}", f"aug={aug}", "++trainer.fast_dev_run=true"], output_dir=tmp_path)
    training.run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics
    assert (metrics["model"], metrics["aug"]) == (model, aug)
    assert metrics["best_val_acc"] is None and metrics["checkpoint"] is None
    assert 0.0 <= metrics["test_acc"] <= 1.0 and math.isfinite(metrics["test_loss"])
    assert 0 < metrics["params"] <= 55_800
    assert "Receptive field:" in (tmp_path / "model_summary.md").read_text()
    [(net, path)] = exported
    assert path == tmp_path / "model.pt2" and sum(p.numel() for p in net.parameters()) == metrics["params"]


def test_train_py_command(tmp_path: Path) -> None:
    """``python train.py ...`` as a user types it: exit 0 and a complete run directory where hydra.run.dir says;
    a console (here not a terminal) that reads well in a log file and ends with the run's summary."""
    run_dir = tmp_path / "run"
    with_progress = [a for a in TINY if "progress_bar" not in a]
    result = run_python(["train.py", *with_progress, "model=dilated", "aug=cutout", "callbacks.progress_bar.refresh_rate=1",
                         f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = assert_run_dir(run_dir)
    console = result.stdout + result.stderr
    assert "\r" not in console and "\x1b[" not in console  # no progress-bar redraws in a log
    assert "epoch 1/1 batch 1/2" in console and "epoch 1/1 done in" in console
    for noise in ("Tip:", "LeafSpec", "on_after_batch_transfer", "FLOPs"):  # Lightning's, on every run
        assert noise not in console, noise
    summary = result.stdout.rstrip().splitlines()[-8:]
    assert summary[0].endswith("Run ok:") and f"{100 * metrics['test_acc']:.2f}%" in summary[1]
    assert summary[-2:] == [f"  run directory      {run_dir}", f"  model              {run_dir / 'model.pt2'}"]
    assert (metrics["model"], metrics["aug"], metrics["epochs"]) == ("dilated", "cutout", 1)
    assert 0.0 <= metrics["best_val_acc"] <= 1.0
    assert Path(metrics["checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()

    # model.pt2 computes what the best checkpoint's network computes
    best = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    net = instantiate(compose_hydra(["model=dilated", "data=synthetic"]).model)
    net.load_state_dict({k.removeprefix("net."): v for k, v in best.items() if k.startswith("net.")})
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(run_dir / "model.pt2")(x), net.eval()(x), atol=1e-5, rtol=1e-5)


def test_val_size_zero_trains_on_everything_and_tests_the_last_epoch(compose_task, monkeypatch,
                                                                     tmp_path: Path) -> None:
    """``data.val_size=0`` (as the README says): no validation, no best-val selection, the last weights are tested."""
    monkeypatch.setattr(training, "export_model", lambda net, path, **_: None)
    cfg = compose_task([*TINY, "data.val_size=0", "trainer.max_epochs=1"], output_dir=tmp_path)
    training.run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics
    assert metrics["best_val_acc"] is None and metrics["checkpoint"] is None
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def test_csv_and_mlflow_loggers_record_the_run(compose_task, monkeypatch, tmp_path: Path) -> None:
    """logger=csv and logger=mlflow (here both at once, one run): each holds the run's validation and test metrics."""
    monkeypatch.setattr(training, "export_model", lambda net, path, **_: None)
    run_dir, store = tmp_path / "run", tmp_path / "mlruns"
    cfg = compose_task([*TINY, "logger=[csv,mlflow]", f"logger.mlflow.save_dir={store}"], output_dir=run_dir)
    training.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["test/acc"]) for r in rows if r.get("test/acc")] == [pytest.approx(metrics["test_acc"])]
    assert any(r.get("val/acc") for r in rows)

    [run] = [p for p in store.glob("*/*") if (p / "meta.yaml").is_file()]
    assert (run / "tags" / "mlflow.runName").read_text() == f"{metrics['model']}_{metrics['aug']}"
    test_acc = float((run / "metrics" / "test" / "acc").read_text().split()[1])
    assert test_acc == pytest.approx(metrics["test_acc"])
    assert (run / "params" / "seed").read_text() == str(cfg.seed)


def test_csv_logger_continues_a_metrics_file_written_by_another_process(tmp_path: Path) -> None:
    """Under trainer=ddp, test runs in a new process with a fresh copy of the logger: its rows go under
    the columns fit wrote, and fit's rows stay."""
    fit_logger = CSV(save_dir=tmp_path, version="")
    fit_logger.log_hyperparams({"seed": 1})  # the main process starts the writer, then spawns fit, then test:
    test_logger = copy.deepcopy(fit_logger)  # each worker gets a copy that knows no columns yet
    fit_logger.log_metrics({"val/acc": 0.5}, step=9)
    fit_logger.save()
    test_logger.log_metrics({"test/acc": 0.6}, step=10)
    test_logger.save()
    with open(Path(fit_logger.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["val/acc"], r["test/acc"]) for r in rows] == [("9", "0.5", ""), ("10", "", "0.6")]


class RecordedLosses(ClassifierModule):
    """Keeps each step's training loss, by the step Lightning logs it at."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.losses: dict[int, float] = {}

    def training_step(self, batch, batch_idx: int):
        loss = super().training_step(batch, batch_idx)
        self.losses[self.global_step] = loss.item()
        return loss


def test_logged_losses_are_those_of_their_step_and_epoch(tmp_path: Path) -> None:
    """The step loss is logged only on the steps the logger writes: each value must be that step's own
    loss, not one left over from an earlier step; the epoch loss and accuracy come once an epoch."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8, generator=g)
    data = DataLoader(TensorDataset(images, torch.randint(0, 10, (50,), generator=g)), batch_size=10)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    module = RecordedLosses(net=net, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = pl.Trainer(max_epochs=2, log_every_n_steps=2, accelerator="cpu", logger=TensorBoardLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=data)

    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    step_losses = {e.step: e.value for e in events.Scalars("train/loss_step")}
    assert sorted(step_losses) == [1, 3, 5, 7, 9]  # 10 steps, every second one written
    for step, value in step_losses.items():
        assert value == pytest.approx(module.losses[step], abs=1e-6), f"step {step} logged another step's loss"
    epoch_losses = [e.value for e in events.Scalars("train/loss_epoch")]
    expected = [sum(module.losses[s] for s in range(5 * e, 5 * e + 5)) / 5 for e in range(2)]
    assert epoch_losses == pytest.approx(expected, abs=1e-6)
    assert len(events.Scalars("train/acc")) == 2
