"""Checks run when a job starts, so a wrong setting fails in a second with one line naming the key,
the value and what is allowed, instead of a traceback from inside torch at step 1,000.

:data:`RULES` checks single values (a key absent from the composed config is skipped, e.g. ``aug.beta``
under ``aug=cutout``); the ``check_*`` functions check what depends on several keys, on the machine,
on the loaded data or on the built network. Every problem found is reported, joined on one line.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifar_lightning.data.sources import CifarArrays
from cifar_lightning.errors import ConfigError, exit_on_user_error
from cifar_lightning.models.net import count_parameters
from cifar_lightning.warm_start import weights_file

# A run writes a few MB (checkpoints, model.pt2, events); demand a margin so it can't fail at the last epoch.
MIN_FREE_MB = 100
_ABSENT = object()


@dataclass(frozen=True)
class Check:
    """A predicate on one value and the words that say what it allows."""

    ok: Callable[[Any], bool]
    allowed: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def integer(low: int, high: int | None = None) -> Check:
    words = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Check(lambda v: _is_int(v) and v >= low and (high is None or v <= high), words)


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Check:
    """A finite number in the interval; ``*_open`` excludes the bound."""
    def ok(v: Any) -> bool:
        return (_is_number(v) and (v > low if low_open else v >= low)
                and (high is None or (v < high if high_open else v <= high)))
    if high is None:
        words = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        words = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Check(ok, words)


def one_of(values: Iterable[Any]) -> Check:
    values = list(values)
    return Check(lambda v: v in values, "one of " + ", ".join(map(str, values)))


def either(*checks: Check) -> Check:
    return Check(lambda v: any(c.ok(v) for c in checks), " or ".join(c.allowed for c in checks))


def index_list() -> Check:
    """Device indices, as Lightning takes them: ``[0, 1]``."""
    return Check(lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x >= 0 for x in v),
                 "a non-empty list of device indices")


def optional(check: Check) -> Check:
    return Check(lambda v: v is None or check.ok(v), f"null or {check.allowed}")


def triple(check: Check) -> Check:
    """Three values (one per RGB channel), each passing ``check``."""
    return Check(lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(check.ok(x) for x in v),
                 f"a list of 3 (one per RGB channel), each {check.allowed}")


PRECISIONS = [v for literal in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(literal)]
BATCH_LIMIT = either(integer(0), number(0.0, 1.0))  # Lightning: a count of batches, or a fraction of them

RULES: dict[str, Check] = {
    "seed": integer(0, 2**32 - 1),
    "max_params": optional(integer(1)),
    "cpu_threads": optional(integer(1)),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.val_size": integer(0),
    "data.split_seed": integer(0),
    "data.num_workers": integer(0),
    "data.mean": triple(number(0.0, 1.0)),
    "data.std": triple(number(0.0, low_open=True)),
    "data.source.num_train": integer(1),
    "data.source.num_test": integer(1),
    "data.source.num_classes": integer(2),
    "model.num_classes": integer(2),
    "model.stem_channels": integer(1),
    "aug.p": number(0.0, 1.0),
    "aug.beta": number(0.0, low_open=True),
    "aug.alpha": number(0.0, low_open=True),
    "aug.size": integer(1, 32),
    "module.label_smoothing": number(0.0, 1.0, high_open=True),
    "module.weight_decay": number(0.0),
    "module.optimizer.lr": number(0.0, low_open=True),
    "module.optimizer.momentum": number(0.0, 1.0, high_open=True),
    "module.finite_check_every_n_steps": integer(1),
    "module.tta_shifts": Check(lambda v: isinstance(v, list) and all(
        isinstance(s, list) and len(s) == 2 and all(_is_int(d) and abs(d) <= 8 for d in s) for s in v),
        "a list of [dx, dy] pixel shifts, each in [-8, 8]"),
    "module.scheduler.pct_start": number(0.0, 1.0, low_open=True, high_open=True),
    "module.scheduler.div_factor": number(0.0, low_open=True),
    "module.scheduler.final_div_factor": number(0.0, low_open=True),
    "module.distill.temperature": number(0.0, low_open=True),
    "module.distill.weight": number(0.0, 1.0),
    "callbacks.ema.decay": number(0.0, 1.0, low_open=True, high_open=True),
    "callbacks.last_checkpoint.every_n_train_steps": optional(integer(0)),
    "trainer.max_epochs": integer(1),
    "trainer.accelerator": one_of(["auto", "cpu", "gpu", "cuda", "mps"]),
    "trainer.devices": either(integer(1), one_of([-1, "auto"]), index_list()),
    "trainer.precision": one_of(PRECISIONS),
    "trainer.log_every_n_steps": integer(1),
    "trainer.limit_train_batches": BATCH_LIMIT,
    "trainer.limit_val_batches": BATCH_LIMIT,
    "trainer.limit_test_batches": BATCH_LIMIT,
    "trainer.check_val_every_n_epoch": optional(integer(1)),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.gradient_clip_val": optional(number(0.0)),
}


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _fail(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


def check_values(cfg: DictConfig, rules: dict[str, Check] = RULES) -> list[str]:
    """One ``key=value: must be ...`` line per value that breaks its rule."""
    problems = []
    for key, check in rules.items():
        value = _select(cfg, key)
        if value is not _ABSENT and not check.ok(value):
            problems.append(f"{key}={value!r}: must be {check.allowed}")
    return problems


def check_teacher(cfg: DictConfig) -> list[str]:
    """With ``module/distill=kd``, the teacher is named and is an exported model (or a run dir with
    one), or a list of them."""
    if OmegaConf.select(cfg, "module.distill") is None:
        return []
    if OmegaConf.is_missing(cfg.module.distill, "teacher"):
        return ["module.distill.teacher is not set: pass module.distill.teacher=<model.pt2 or run directory>"]
    teacher = cfg.module.distill.teacher
    paths = [str(p) for p in teacher] if OmegaConf.is_list(teacher) else [str(teacher)]
    if not paths:
        return ["module.distill.teacher=[]: name at least one model.pt2 or run directory"]
    return [f"module.distill.teacher={teacher}: no such exported model: {p}; "
            "pass a model.pt2 or a run directory that has one"
            for p in paths if (file := weights_file(p)).suffix != ".pt2" or not file.is_file()]


def check_machine(cfg: DictConfig) -> list[str]:
    """The accelerator and device count the trainer asks for exist here."""
    accelerator, devices = _select(cfg, "trainer.accelerator"), _select(cfg, "trainer.devices")
    if accelerator in ("gpu", "cuda"):
        available, kind, fix = torch.cuda.device_count(), "CUDA GPU", "use trainer=cpu or trainer.accelerator=auto"
    elif accelerator == "cpu":
        available, kind, fix = os.cpu_count() or 1, "CPU core", "lower trainer.devices"
    else:
        return []
    if available == 0:
        return [f"trainer.accelerator={accelerator}: no {kind} is visible on this machine; {fix}"]
    wanted = max(devices) + 1 if isinstance(devices, list) and devices else devices
    if _is_int(wanted) and wanted > available:
        return [f"trainer.devices={devices}: this machine has {available} {kind}(s); {fix}"]
    return []


def validate_config(cfg: DictConfig) -> None:
    """Everything that can be checked before building anything; raises one-line :class:`ConfigError`."""
    _fail(check_values(cfg) + check_teacher(cfg) + check_machine(cfg))


def validate_data(cfg: DictConfig, data: CifarArrays) -> None:
    """Split sizes, batch size and class count against the loaded dataset."""
    n, val_size, batch = len(data.train_labels), cfg.data.val_size, cfg.data.batch_size
    problems = []
    if val_size >= n:
        problems.append(f"data.val_size={val_size}: must be < {n}, the number of training images")
    elif batch > n - val_size:
        problems.append(f"data.batch_size={batch}: must be <= {n - val_size}, the training images left after "
                        f"data.val_size={val_size} (an epoch drops its last incomplete batch)")
    if cfg.model.num_classes != len(data.classes):
        problems.append(f"model.num_classes={cfg.model.num_classes}: the dataset has {len(data.classes)} classes; "
                        f"set model.num_classes={len(data.classes)}")
    _fail(problems)


def validate_model(cfg: DictConfig, net: nn.Module) -> None:
    """The built network fits the parameter budget ``max_params``, when one is set."""
    budget, params = cfg.get("max_params"), count_parameters(net)
    if budget is not None and params > budget:
        raise ConfigError(f"max_params={budget}: the network has {params} trainable parameters; "
                          "shrink the model (e.g. model.stages[*].channels) or raise max_params")


def check_output_dir(path: str | Path) -> None:
    """The run directory can be created, written and has :data:`MIN_FREE_MB` free, or a one-line error."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    fix = "pass hydra.run.dir=<a writable directory> (hydra.sweep.dir= with -m)"
    if not existing.is_dir():
        raise ConfigError(f"output directory {path}: {existing} is a file, not a directory; {fix}")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as e:
        raise ConfigError(f"output directory {path}: cannot write in {existing} ({e.strerror}); {fix}") from e
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(f"output directory {path}: only {free_mb:.0f} MB free, a run needs {MIN_FREE_MB} MB; "
                          f"free some space or {fix}")


class OutputDirCheck(Callback):
    """Hydra callback: check the run or sweep directory before Hydra creates it and writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        with exit_on_user_error():  # Hydra turns a callback's exceptions into warnings, but not SystemExit
            check_output_dir(OmegaConf.select(config, key))
