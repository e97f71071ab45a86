"""Shared helpers: compose ``conf/`` the way ``train.py`` does, tiny synthetic-data overrides,
subprocess launches of ``train.py``, and the checks every run directory must pass."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

import cifar_lightning  # noqa: F401 - registers the ${pixels:...} resolver

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a test: 48 + 16 generated images, one or two batches per stage, CPU.
TINY = [
    "data=synthetic",
    "data.source.num_train=48",
    "data.source.num_test=16",
    "data.val_size=16",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
]


def options(group: str) -> list[str]:
    """Every option of a config group, from the files in ``conf/<group>/``: new options get tested."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_hydra(overrides: Sequence[str] = (), output_dir: str | Path = "unused-output-dir") -> DictConfig:
    """The config ``train.py`` would get, with the Hydra node kept (``return_hydra_config=True``)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(output_dir)  # what Hydra's run_job sets before the task runs
    return cfg


@pytest.fixture
def compose_task() -> Iterator[Callable[..., DictConfig]]:
    """Compose like ``@hydra.main``: set HydraConfig (so ``${hydra:...}`` resolves) and hand the
    task the config without its ``hydra`` node. HydraConfig is cleared again after the test."""

    def _compose(overrides: Sequence[str] = (), output_dir: str | Path = "unused-output-dir") -> DictConfig:
        cfg = compose_hydra(overrides, output_dir)
        HydraConfig.instance().set_config(cfg)
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
        return task

    yield _compose
    HydraConfig.instance().cfg = None


def start_python(args: Sequence[str]) -> subprocess.Popen:
    """Start ``python <args>`` from the repository root, as a user runs it; output captured as text."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_python` process; killed (and the test failed) past ``timeout`` seconds."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_python(args: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return finish(start_python(args), timeout)


def assert_run_dir(run_dir: Path) -> dict:
    """The artefacts every finished run leaves; returns its metrics.json."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics
    assert 0 < metrics["params"] <= 55_800
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["test_loss"] > 0 and metrics["test_loss"] == metrics["test_loss"]  # positive, not NaN
    assert metrics["run_dir"] == str(run_dir)
    assert (run_dir / "model.pt2").stat().st_size > 0
    assert "Receptive field:" in (run_dir / "model_summary.md").read_text()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*")), "no tensorboard events"
    return metrics
