"""Test a trained model again, without Lightning's trainer: accuracy, per-class accuracy, confusion matrix.

    python -m cifar_lightning.evaluate <run_dir | model.pt2 | checkpoint.ckpt> [key=value ...] [--tta-flip] [--export out.pt2]

Test-time augmentation: ``--tta-flip`` (or the run's ``module.tta_flip``) and the shifted views of
``module.tta_shifts`` (the run's, or e.g. ``'module.tta_shifts=[[1,1],[-1,-1],[1,-1],[-1,1]]'``).

A run directory (or a file inside one) brings its saved config, ``<run_dir>/.hydra/config.yaml``:
the data to test on and, for a checkpoint, the network to rebuild; ``key=value`` arguments
override it (``data.root=/data/cifar10``). A model outside any run is tested on ``conf/``
composed with the same arguments. :mod:`cifar_lightning.report` reuses these loaders.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

import cifar_lightning  # noqa: F401 - registers the config resolvers
from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.data.sources import DatasetError
from cifar_lightning.export import export_model, load_exported
from cifar_lightning.module import to_float_nchw
from cifar_lightning.predictions import PredictionCollector, Predictions
from cifar_lightning.tta import Shifts, predict_logits
from cifar_lightning.warm_start import PREFIX, WarmStartError, network_state

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def find_run_dir(path: str | Path) -> Path | None:
    """The run directory ``path`` is or lies in (``model.pt2``, ``checkpoints/*.ckpt``), if any."""
    path = Path(path)
    candidates = [path] if path.is_dir() else [path.parent, path.parent.parent]
    return next((d for d in candidates if (d / ".hydra" / "config.yaml").is_file()), None)


def load_config(run_dir: Path | None, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved config with ``key=value`` overrides applied; without a run, ``conf/`` composed with them."""
    if run_dir is None:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides))
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(run_dir)  # was ${hydra:runtime.output_dir}, which needs a live Hydra job
    for item in overrides:
        key, sep, value = item.lstrip("+").partition("=")
        if not sep or ("." not in key and (CONF_DIR / key).is_dir()):
            raise ValueError(f"{item!r}: give key=value overrides of the run's saved config (e.g. data.root=...); "
                             "config groups such as data=folder are not re-composed for a saved run")
        OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, force_add=True)
    return cfg


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run tested: the one metrics.json names, else the best-val file, else last.ckpt."""
    metrics = run_dir / "metrics.json"
    named = json.loads(metrics.read_text()).get("checkpoint") if metrics.is_file() else None
    if named and Path(named).is_file():
        return Path(named)
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.name))
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no model.pt2 and no checkpoints/*.ckpt to evaluate")
    return ckpts[0]


def load_model(path: str | Path, cfg: DictConfig) -> nn.Module:
    """A run directory's ``model.pt2`` (else its best checkpoint), an exported program, or a checkpoint.

    A checkpoint is read with ``weights_only=True`` (it cannot run code) into ``cfg.model``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt2" if (path / "model.pt2").is_file() else best_checkpoint(path)
    if path.suffix == ".pt2":
        return load_exported(path)
    net = instantiate(cfg.model)
    net.load_state_dict(network_state(path))
    return net.eval()


def tta_built_in(model: nn.Module) -> bool:
    """A program exported with TTA (``tta.TestTimeAveraged``, a TTA run's ``model.pt2``) keeps its network
    under ``net.``."""
    return any(k.startswith(PREFIX) for k in model.state_dict())


def tta_settings(model: nn.Module, cfg: DictConfig, flip: bool = False) -> tuple[bool, list]:
    """(flip, shifts) to apply when testing ``model``: ``flip`` or the config's ``module.tta_flip``, and its
    ``module.tta_shifts``; none for a program with TTA built in, which would otherwise average views of views."""
    if tta_built_in(model):
        return False, []
    shifts = OmegaConf.select(cfg, "module.tta_shifts")  # absent from runs older than the option
    return (flip or bool(OmegaConf.select(cfg, "module.tta_flip", default=False)),
            OmegaConf.to_container(shifts) if shifts is not None else [])


def load_datamodule(cfg: DictConfig) -> CIFAR10DataModule:
    """The run's data, set up in this process (no loader workers: one pass over the test set; the GPU
    data path, which has none, holds the data on the CPU here since no trainer gives it a device)."""
    no_workers = {"num_workers": 0} if "num_workers" in cfg.data.datamodule else {}
    datamodule = instantiate(cfg.data.datamodule, **no_workers)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def autocast(device: str | torch.device, precision: str | None) -> contextlib.AbstractContextManager:
    """The run's mixed precision on a GPU, so a re-test there computes what the run's own test did."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype) if dtype and device_type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, tta_flip: bool = False, device: str | torch.device = "cpu",
            max_wrong: int = 25, precision: str | None = None, tta_shifts: Shifts = ()) -> Predictions:
    """Logits of every test image, in loader order; the loader yields (uint8 NHWC images, labels)."""
    model = model.to(device)
    collector = PredictionCollector(max_wrong)
    for images, labels in loader:
        images = to_float_nchw(images.to(device), channels_last=False)
        with autocast(device, precision):
            logits = predict_logits(model, images, tta_flip, tta_shifts)
        collector.update(images, logits, labels)
    return collector.result()


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
    # a minute or more on a CPU: say what is going on first
    print(f"testing on {len(loader.dataset)} images ({device})...", file=sys.stderr, flush=True)
    preds = predict(model, loader, tta_flip, device,
                    precision=OmegaConf.select(cfg, "trainer.precision"), tta_shifts=tta_shifts)
    tta = ("TTA built into the program" if tta_built_in(model)
           else f"flip TTA {'on' if tta_flip else 'off'}, shifts {tta_shifts or 'none'}")
    print(f"{label} ({tta}, {device})")
    print(format_report(preds, datamodule.classes))
    if export:
        print(f"exported to {export_model(model, export, tta_flip=tta_flip, tta_shifts=tta_shifts)}")
    return preds


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: Sequence[str] | None = None) -> Predictions:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a run directory, a model.pt2 or a Lightning .ckpt")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.root=/data/cifar10")
    parser.add_argument("--tta-flip", action="store_true",
                        help="average the logits of each image and its mirror (also on if the run's module.tta_flip "
                             "is; a program with TTA built in is tested as it is)")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--export", metavar="OUT.pt2",
                        help="also write the evaluated model as a torch.export program (its TTA built in)")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(find_run_dir(args.model), args.overrides)
        print(f"loading the data ({cfg.data.datamodule.source._target_.rsplit('.', 1)[-1]})...", file=sys.stderr, flush=True)
        datamodule = load_datamodule(cfg)
        model = load_model(args.model, cfg)
    except (ValueError, FileNotFoundError, DatasetError, WarmStartError) as error:  # the user's to fix: one line, no traceback
        parser.error(str(error))
    return score(model, cfg, datamodule, args.model, args.tta_flip, args.device, args.export)


if __name__ == "__main__":
    main()
