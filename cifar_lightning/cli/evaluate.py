"""Test a trained model again, without Lightning's trainer: accuracy, per-class accuracy, confusion matrix.

    python -m cifar_lightning.cli.evaluate <run_dir | model.pt2 | checkpoint.ckpt> [key=value ...] [--tta-flip] [--export out.pt2]

Test-time augmentation: ``--tta-flip`` (or the run's ``module.tta_flip``) and the shifted views of
``module.tta_shifts`` (the run's, or e.g. ``'module.tta_shifts=[[1,1],[-1,-1],[1,-1],[-1,1]]'``).

A run directory (or a file inside one) brings its saved config; ``key=value`` arguments override it
(``data.root=/data/cifar10``); see :mod:`cifar_lightning.runs`, which loads it all.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.export import export_model
from cifar_lightning.predictions import Predictions
from cifar_lightning.runs import (default_device, find_run_dir, load_config, load_datamodule, load_model, predict,
                                  tta_built_in, tta_settings)


def format_report(preds: Predictions, classes: Sequence[str]) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as plain text."""
    width = max(len(c) for c in classes)
    lines = [f"test accuracy: {100 * preds.accuracy():.2f}% ({preds.errors()} wrong of {len(preds.labels)})",
             "", "per-class accuracy:"]
    counts = preds.confusion().sum(1)
    for i, (name, acc) in enumerate(zip(classes, preds.per_class_accuracy().tolist())):
        lines.append(f"  {i:>2} {name:<{width}}  {100 * acc:6.2f}%  ({int(counts[i])} images)")
    matrix = preds.confusion()
    cell = max(5, len(str(int(matrix.max()))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class):",
              " " * (width + 4) + "".join(f"{j:>{cell}}" for j in range(len(classes)))]
    for i, name in enumerate(classes):
        lines.append(f"  {i:>2}{name:>{width + 1}}" + "".join(f"{int(v):>{cell}}" for v in matrix[i]))
    return "\n".join(lines)


def score(model: nn.Module, cfg: DictConfig, datamodule: CIFAR10DataModule, label: str, flip: bool = False,
          device: str = "cpu", export: str | Path | None = None) -> Predictions:
    """Test ``model`` with its test-time augmentation (:func:`tta_settings`), print the report and, with
    ``export``, write the model as a program with that augmentation built in."""
    tta_flip, tta_shifts = tta_settings(model, cfg, flip)
    loader = datamodule.test_dataloader()
    # a minute or more on a CPU: say what is going on first (stdout: stderr is for the one-line errors)
    print(f"testing the test set ({device})...", flush=True)
    preds = predict(model, loader, tta_flip, device,
                    precision=OmegaConf.select(cfg, "trainer.precision"), tta_shifts=tta_shifts)
    tta = ("TTA built into the program" if tta_built_in(model)
           else f"flip TTA {'on' if tta_flip else 'off'}, shifts {tta_shifts or 'none'}")
    print(f"{label} ({tta}, {device})")
    print(format_report(preds, datamodule.classes))
    if export:
        print(f"exported to {export_model(model, export, tta_flip=tta_flip, tta_shifts=tta_shifts)}")
    return preds


def main(argv: Sequence[str] | None = None) -> Predictions:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.cli.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a run directory, a model.pt2 or a Lightning .ckpt")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.root=/data/cifar10")
    parser.add_argument("--tta-flip", action="store_true",
                        help="average the logits of each image and its mirror (also on if the run's module.tta_flip "
                             "is; a program with TTA built in is tested as it is)")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--export", metavar="OUT.pt2",
                        help="also write the evaluated model as a torch.export program (its TTA built in)")
    args = parser.parse_args(argv)

    with exit_on_user_error():
        cfg = load_config(find_run_dir(args.model), args.overrides)
        print(f"loading the data ({cfg.data.datamodule.source._target_.rsplit('.', 1)[-1]})...", flush=True)
        datamodule = load_datamodule(cfg)
        model = load_model(args.model, cfg)
        return score(model, cfg, datamodule, args.model, args.tta_flip, args.device, args.export)


if __name__ == "__main__":
    main()
