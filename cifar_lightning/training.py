"""One training run from a composed Hydra config: build, fit, test, export, write ``metrics.json``.

``train.py`` only calls :func:`run`; everything it needs is instantiated from ``conf/``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.callbacks.artefacts import RunArtefacts, log_hparams
from cifar_lightning.callbacks.speed import TrainSpeed
from cifar_lightning.errors import UserError, first_line, log_to_file
from cifar_lightning.export import export_model
from cifar_lightning.io import write_json, write_text
from cifar_lightning.models.net import count_parameters
from cifar_lightning.models.receptive_field import format_table, layer_table
from cifar_lightning.module import ClassifierModule
from cifar_lightning.resume import checkpoint_path
from cifar_lightning.warm_start import load_network_weights
from cifar_lightning.validation import check_output_dir, validate_config, validate_data, validate_model

log = logging.getLogger(__name__)


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip")


# Known and harmless, from inside Lightning 2.6, on every run: its own pytree helper uses torch's
# deprecated LeafSpec, and it advertises a cloud logger at each Trainer start.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        module=r"lightning\.pytorch\.utilities\._pytree")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_tip)


def load_weights(module: ClassifierModule, ckpt_path: str | Path) -> None:
    """Load a checkpoint's weights only (``weights_only=True``: a checkpoint can't run code here).

    With EMA, the checkpoint's ``state_dict`` holds the averaged weights, which are the ones to test.
    """
    state = torch.load(ckpt_path, map_location=module.device, weights_only=True)["state_dict"]
    module.load_state_dict(state)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, ClassifierModule, pl.Trainer]:
    """Instantiate datamodule, module, callbacks, loggers and trainer from the config; a user error
    raised inside a constructor (e.g. an unreadable distillation teacher) surfaces as itself, one line."""
    try:
        return _build(cfg)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def _build(cfg: DictConfig) -> tuple[pl.LightningDataModule, ClassifierModule, pl.Trainer]:
    datamodule = instantiate(cfg.data.datamodule)
    module = instantiate(cfg.module, net=instantiate(cfg.model), batch_aug=instantiate(cfg.aug))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if cfg.data.val_size == 0:  # no validation split: keep the last epoch, monitor nothing, and
        for cb in callbacks:     # name no val/acc (the file would read val_acc0.0000, a wrong value)
            if isinstance(cb, pl.callbacks.ModelCheckpoint) and cb.monitor is not None:
                cb.monitor, cb.filename = None, "epoch{epoch:03d}"
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def start(cfg: DictConfig) -> tuple[pl.LightningDataModule, ClassifierModule, pl.Trainer, Path | None]:
    """Everything before training: checks, the built objects, the data. A failure here is a failed start."""
    out = Path(cfg.paths.output_dir)
    check_output_dir(out)
    validate_config(cfg)  # wrong values fail here, in one line, not deep inside torch later
    resume = checkpoint_path(cfg.resume) if cfg.get("resume") else None
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    log.info("torch CPU threads: %d", torch.get_num_threads())
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build(cfg)
    if cfg.get("init_weights") and not resume:  # a resumed run restores its own weights
        load_network_weights(module.net, cfg.init_weights)
    datamodule.prepare_data()
    validate_data(cfg, datamodule.load())
    validate_model(cfg, module.net)
    return datamodule, module, trainer, resume


def train(cfg: DictConfig, datamodule: pl.LightningDataModule, module: ClassifierModule, trainer: pl.Trainer,
          resume: Path | None, started: float) -> dict[str, Any]:
    """Fit, test the best checkpoint, export ``model.pt2``; return the run's metrics."""
    out = Path(cfg.paths.output_dir)
    table = format_table(layer_table(module.net), count_parameters(module.net))
    log.info("Layers, receptive field, params and MACs:\n%s", table)
    if trainer.is_global_zero:  # under ddp/SLURM every process runs train(); one writes the files
        write_text(out / "model_summary.md", f"# Model summary\n\n{table}\n")
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else ""
    if best:
        load_weights(module, best)
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    if trainer.is_global_zero:
        export_model(module.net, out / "model.pt2", tta_flip=module.hparams.tta_flip,
                     tta_shifts=module.hparams.tta_shifts)

    speed = next((cb for cb in trainer.callbacks if isinstance(cb, TrainSpeed)), None)
    artefacts = next((cb for cb in trainer.callbacks if isinstance(cb, RunArtefacts)), None)
    best_score = checkpoint.best_model_score if checkpoint is not None and checkpoint.monitor else None
    metrics = {
        "status": "ok",
        "params": count_parameters(module.net),
        "best_val_acc": float(best_score) if best_score is not None else None,
        "test_acc": test["test/acc"],
        "test_loss": test["test/loss"],
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.time() - started, 1),
        "cpu_threads": torch.get_num_threads(),
        **(speed.summary() if speed else {}),
        **(artefacts.summary() if artefacts else {}),
        "checkpoint": best or None,
    }
    log_hparams(trainer.loggers, cfg, metrics)
    return metrics


def run_identity() -> dict[str, Any]:
    """What names this run in a sweep summary: its config choices and command-line overrides."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"model": hc.runtime.choices.get("model"), "aug": hc.runtime.choices.get("aug"),
            "overrides": list(hc.overrides.task), "job_num": hc.job.get("num")}


# Under ddp (and SLURM) every process runs run(); only global rank 0 writes metrics.json.
write_metrics = rank_zero_only(write_json)

FAILED_ATTEMPTS = "failed_attempts.jsonl"
HYDRA_START_FILES = {".hydra", "train.log"}  # what Hydra writes into a run directory before the run starts


def record_failure(out: Path, record: dict[str, Any]) -> None:
    """``metrics.json`` says the run failed, unless it holds a finished run's results (a failed
    ``resume=`` of it): those are kept, and the attempt is appended to ``failed_attempts.jsonl`` beside them."""
    path = out / "metrics.json"
    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        previous = {}
    if previous.get("status") != "ok":
        write_metrics(path, record)
        return
    with open(out / FAILED_ATTEMPTS, "a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}) + "\n")
    log.warning("metrics.json keeps the finished run's results; this attempt is recorded in %s",
                out / FAILED_ATTEMPTS)


def discard_run_dir(out: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote at start: a failed start leaves none."""
    if not out.is_dir() or any(p.name not in HYDRA_START_FILES for p in out.iterdir()):
        return
    shutil.rmtree(out / ".hydra", ignore_errors=True)
    (out / "train.log").unlink(missing_ok=True)
    out.rmdir()


def format_summary(metrics: dict[str, Any]) -> str:
    """The lines a finished run ends with on the console (and in train.log)."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    run_dir = Path(metrics["run_dir"])
    rows = [("test accuracy", f"{percent(metrics['test_acc'])} (loss {metrics['test_loss']:.4f})"),
            ("best val accuracy", percent(metrics.get("best_val_acc"))),
            ("params", f"{metrics['params']:,}"),
            ("epochs", str(metrics["epochs"])),
            ("wall time", time.strftime("%H:%M:%S", time.gmtime(metrics["wall_time_s"]))),
            ("run directory", str(run_dir)),
            ("model", str(run_dir / "model.pt2"))]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"Run {metrics['status']}:", *(f"  {name:<{width}}  {value}" for name, value in rows)])


def run(cfg: DictConfig) -> float | None:
    """Train, end with a summary on the console, and leave ``metrics.json``; the value returned is
    what sweepers optimize.

    A run without a value (failed, or no validation split) returns None rather than NaN:
    hydra-optuna-sweeper 1.3.0 aborts the search on NaN (hydra#2237) but marks a trial
    failed and goes on when the value is not a number.

    In a multirun a failure is recorded and swallowed so the other jobs still run and the
    sweep summary still gets written (Hydra's basic launcher would re-raise and skip it).
    A single run that fails before training (a bad value, missing data) leaves no run directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    started = time.time()
    out = Path(cfg.paths.output_dir)
    identity = {**run_identity(), "seed": cfg.seed, "run_dir": str(out)}
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    training = False
    try:
        parts = start(cfg)
        training = True
        metrics = train(cfg, *parts, started=started)
    except Exception as error:  # noqa: BLE001 - recorded, then re-raised outside sweeps
        message = f"{type(error).__name__}: {first_line(error)}"
        user_error = isinstance(error, UserError)  # one line says it all; a bug keeps its traceback
        if multirun:
            record_failure(out, {**identity, "status": "failed", "error": message})
            log.error("run failed; the sweep goes on: %s", message, exc_info=not user_error)
            return None
        if training or not user_error:
            record_failure(out, {**identity, "status": "failed", "error": message})
        else:
            discard_run_dir(out)
        if not user_error:
            log_to_file("run failed", exc_info=True)  # the console gets the traceback once, from Hydra
        raise
    metrics = {**identity, **metrics}
    write_metrics(out / "metrics.json", metrics)
    if rank_zero_only.rank == 0:
        log.info(format_summary(metrics))
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)
