"""End to end: every model x aug trains and tests, and ``train.py`` works as a command.

(A missing dataset's one-line message on the command line is checked with the other user errors
in test_reliability.py.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from cifar_lightning import training
from cifar_lightning.export import load_exported
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
    """``python train.py ...`` as a user types it: exit 0 and a complete run directory where hydra.run.dir says."""
    run_dir = tmp_path / "run"
    result = run_python(["train.py", *TINY, "model=dilated", "aug=cutout", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = assert_run_dir(run_dir)
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
