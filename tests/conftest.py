"""Shared helpers: compose ``conf/`` the way ``train.py`` does, tiny synthetic-data overrides,
subprocess launches of ``train.py``, the checks every run directory must pass, and the one
small 2 x 2 sweep that test_sweep.py and test_artefacts.py both read."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# One intra-op thread, here and in every train.py the tests start (they inherit the environment):
# on batches of 16 images a second thread saves nothing, and on a busy 2-core machine (or beside a
# second test process) OpenMP threads waiting for each other made a training step 5-40x slower
# (0.1 s -> up to 5 s). Set before torch is imported; a value already in the environment is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict, read_write  # noqa: E402

import cifar_lightning  # noqa: F401, E402 - registers the ${pixels:...} resolver

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a test: 48 + 16 generated images, one or two batches per stage, CPU, no
# progress bar, and no drawn artefacts (seconds of matplotlib per run; the sweep below has them).
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
    "++trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "~callbacks.run_artefacts",
]

# The README's 2 x 2 sweep (model x aug), small: two epochs of three batches (the curves get two
# points), 64 test images in two batches, with every artefact. Run once, by the fixture below.
SWEEP = ["-m", "model=strided,dilated", "aug=cutout,ricap", "data=synthetic", "data.source.num_train=80",
         "data.source.num_test=64", "data.val_size=16", "data.batch_size=16", "data.eval_batch_size=32",
         "trainer.max_epochs=2", "++trainer.limit_train_batches=3", "trainer.accelerator=cpu",
         "++trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
SWEEP_CELLS = {("strided", "cutout"), ("strided", "ricap"), ("dilated", "cutout"), ("dilated", "ricap")}
SWEEP_NUM_TEST = 64


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


def task_config(overrides: Sequence[str] = (), output_dir: str | Path = "unused-output-dir") -> DictConfig:
    """What ``@hydra.main`` hands train.py's task: HydraConfig set (so ``${hydra:...}`` resolves),
    the config without its ``hydra`` node. Call :func:`clear_hydra` afterwards."""
    cfg = compose_hydra(overrides, output_dir)
    HydraConfig.instance().set_config(cfg)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def clear_hydra() -> None:
    HydraConfig.instance().cfg = None


@pytest.fixture
def compose_task() -> Iterator[Callable[..., DictConfig]]:
    """:func:`task_config` for one test; HydraConfig is cleared again after it."""
    yield task_config
    clear_hydra()


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


@pytest.fixture(scope="session")
def sweep_2x2(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """``python train.py -m`` over :data:`SWEEP`, once per session (each train.py costs seconds of imports
    and each run an export). Tests that change files work on a copy of the directory."""
    sweep_dir = tmp_path_factory.mktemp("sweep_2x2") / "sweep"
    return run_python(["train.py", *SWEEP, f"hydra.sweep.dir={sweep_dir}"]), sweep_dir
