"""Rebuild a run's or a sweep's pictures and tables without retraining:

    python -m cifar_lightning.cli.report <run_dir | sweep_dir> [--docs docs/]

rebuilds them from ``.hydra/config.yaml``, ``model.pt2`` (or the best checkpoint) and ``tensorboard/``
(drawing in :mod:`cifar_lightning.plots`, loading in :mod:`cifar_lightning.runs`, the sweep table in
:mod:`cifar_lightning.sweeps`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from cifar_lightning.data.batches import to_float_nchw
from cifar_lightning.errors import RunDirError, exit_on_user_error
from cifar_lightning.io import atomic_path, write_json
from cifar_lightning.plots import (RUN_PNGS, augmented_title, plot_augmented_batch, save_figure, tensorboard_dir,
                                   write_curves, write_prediction_artefacts)
from cifar_lightning.runs import default_device, find_run_dir, load_config, load_datamodule, load_model, predict, tta_settings
from cifar_lightning.sweeps import to_markdown, write_summary

log = logging.getLogger(__name__)


def augmented_batch(cfg: DictConfig, datamodule) -> tuple[Tensor, Tensor]:
    """One training batch through the run's Albumentations pipeline and batch regularizer."""
    torch.manual_seed(cfg.seed)
    images, labels = next(iter(datamodule.train_dataloader()))
    return instantiate(cfg.aug)(to_float_nchw(images, channels_last=False), labels)


def tested_batches(cfg: DictConfig, loader: DataLoader) -> Iterable:
    """The test batches the run itself tested: all, or the first ``trainer.limit_test_batches`` (a count or,
    as Lightning reads a float, a fraction), so the rebuilt confusion matrix agrees with metrics.json."""
    limit = OmegaConf.select(cfg, "trainer.limit_test_batches")
    if limit is None or limit == 1.0 and isinstance(limit, float):
        return loader
    count = limit if isinstance(limit, int) else int(len(loader) * limit)
    log.info("testing the first %d of %d test batches, as the run did (trainer.limit_test_batches=%s)",
             count, len(loader), limit)
    return itertools.islice(loader, count)


def report_run(run_dir: str | Path, device: str | None = None) -> dict[str, Any]:
    """Rebuild every per-run artefact from the saved config, model and events.

    The test set is run again (in the run's mixed precision on a GPU). metrics.json keeps the run's
    own numbers; it only gains the per-class accuracy if it has none (a run from before this report).
    """
    run_dir, device = Path(run_dir), device or default_device()
    cfg = load_config(run_dir)
    datamodule = load_datamodule(cfg)
    classes = datamodule.classes
    model = load_model(run_dir, cfg)
    tta_flip, tta_shifts = tta_settings(model, cfg)
    preds = predict(model, tested_batches(cfg, datamodule.test_dataloader()), tta_flip, device,
                    precision=OmegaConf.select(cfg, "trainer.precision"), tta_shifts=tta_shifts)
    summary = write_prediction_artefacts(run_dir, preds, classes)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if metrics.get("test_acc") is not None and abs(metrics["test_acc"] - preds.accuracy()) > 1e-6:
        log.warning("%s: test accuracy %.4f here, %.4f in metrics.json (other device or precision)",
                    run_dir, preds.accuracy(), metrics["test_acc"])
    if metrics and not all(key in metrics for key in summary):
        write_json(metrics_path, {**summary, **metrics})
    images, targets = augmented_batch(cfg, datamodule)
    save_figure(plot_augmented_batch(images, targets, classes, augmented_title(cfg.aug._target_.rsplit(".", 1)[-1])),
                run_dir / "augmented_batch.png")
    write_curves(run_dir, tensorboard_dir(run_dir))
    return summary


def copy_to_docs(paths: Iterable[Path], docs: Path) -> list[Path]:
    """Copy PNGs into ``docs`` as 256-colour palettes (a fraction of the size, same look)."""
    written = []
    for path in paths:
        if path.is_file():
            with atomic_path(docs / path.name) as tmp:
                Image.open(path).convert("RGB").quantize(256).save(tmp, format="png", optimize=True)
            written.append(docs / path.name)
    return written


def is_sweep_dir(path: Path) -> bool:
    return (path / "multirun.yaml").is_file() or (find_run_dir(path) is None and any(path.glob("*/metrics.json")))


def report(path: Path, device: str | None) -> list[Path]:
    """Rebuild a run's or every run's and the sweep's files; the PNGs worth copying into docs/."""
    if is_sweep_dir(path):
        runs = [p.parent for p in sorted(path.glob("*/metrics.json"))
                if json.loads(p.read_text()).get("status") == "ok"]
        for run_dir in runs:
            report_run(run_dir, device)
            print(f"{run_dir}: {', '.join(RUN_PNGS)}, confusion_matrix.csv")
        print(to_markdown(write_summary(path)))
        return [path / "summary_curves.png", *(runs[0] / name for name in RUN_PNGS)] if runs else []
    if find_run_dir(path) == path:
        summary = report_run(path, device)
        print(f"{path}: {', '.join(RUN_PNGS)}, confusion_matrix.csv; {summary['test_errors']} test errors")
        return [path / name for name in RUN_PNGS]
    raise RunDirError(f"{path}: neither a run directory (.hydra/config.yaml) nor a sweep directory; "
                      "pass outputs/runs/<time> or outputs/multirun/<time>")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.cli.report",
                                     description="Rebuild a run's or a sweep's artefacts without retraining.")
    parser.add_argument("path", type=Path, help="a run directory or a sweep (multirun) directory")
    parser.add_argument("--docs", type=Path, help="also copy the PNGs, made small, into this folder (e.g. docs/)")
    parser.add_argument("--device", default=None, help="where to run the test set (default: cuda if available)")
    args = parser.parse_args(argv)
    # stdout, as train.py's log: stderr keeps the one `error: ...` line of a user error
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with exit_on_user_error():
        pngs = report(args.path, args.device)
    if args.docs:
        for path in copy_to_docs(pngs, args.docs):
            print(f"copied {path} ({path.stat().st_size // 1024} KiB)")

if __name__ == "__main__":
    main()
