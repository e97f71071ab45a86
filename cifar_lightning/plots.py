"""Every figure and table of a run and a sweep, drawn from data a run produced or saved.

Per run: ``curves.png`` (from the TensorBoard events), ``misclassified.png``, ``confusion_matrix.png``
and ``.csv`` (from the test predictions), ``augmented_batch.png`` (one training batch as the
network sees it). Per sweep: ``summary_curves.png`` (see :mod:`cifar_lightning.sweeps`).
:class:`~cifar_lightning.callbacks.artefacts.RunArtefacts` writes them during training and
``python -m cifar_lightning.cli.report`` rebuilds them afterwards; so this module imports neither.
"""
from __future__ import annotations

import bisect
import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor

from cifar_lightning.io import atomic_path, write_text
from cifar_lightning.predictions import Predictions

log = logging.getLogger(__name__)

DPI = 100
# Fixed figure sizes (inches): every PNG has a known pixel size, DPI times these.
CURVES_SIZE = (15.0, 4.5)
MISCLASSIFIED_SIZE = (10.0, 11.8)
CONFUSION_SIZE = (9.0, 8.0)
AUGMENTED_SIZE = (12.0, 7.7)
SWEEP_CURVES_SIZE = (9.0, 5.5)
GRID_COLUMNS = 5
AUGMENTED_SHAPE = (4, 8)  # rows, columns of augmented_batch.png
RUN_PNGS = ("curves.png", "misclassified.png", "confusion_matrix.png", "augmented_batch.png")

Scalars = dict[str, dict[int, float]]  # tag -> {epoch: value}


# --------------------------------------------------------------------------- files


def save_figure(fig: Figure, path: str | Path, experiments: Iterable[Any] = (), step: int = 0) -> Path:
    """Write ``fig`` as a PNG (atomically) and log that PNG to each TensorBoard ``SummaryWriter`` (drawn once)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    experiments = list(experiments)
    if experiments:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        for experiment in experiments:
            experiment.add_image(f"artefacts/{Path(path).stem}", pixels, global_step=step, dataformats="HWC")
    return Path(path)


def tensorboard_dir(run_dir: str | Path) -> Path | None:
    """The folder holding the run's TensorBoard event files."""
    events = sorted(Path(run_dir).rglob("events.out.tfevents.*"))
    return events[0].parent if events else None


def read_scalars(tb_dir: str | Path) -> Scalars:
    """Every scalar tag, per epoch (the last value wins, so a resumed epoch replaces the interrupted one).

    Lightning logs ``epoch`` (``trainer/epoch`` here) with every metric; a value logged at step ``s`` (the LR monitor logs
    at an epoch's start) belongs to the epoch of the first ``epoch`` record at a step >= ``s``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not a line per event file in the run's log
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    epoch_tag = next((t for t in ("trainer/epoch", "epoch") if t in tags), None)  # epoch: runs before the rename
    if epoch_tag is None:
        return {}
    marks = sorted((e.step, int(e.value)) for e in accumulator.Scalars(epoch_tag))
    steps = [step for step, _ in marks]
    scalars: Scalars = {}
    for tag in tags:
        for event in accumulator.Scalars(tag):
            i = bisect.bisect_left(steps, event.step)
            if tag != epoch_tag and i < len(marks):
                scalars.setdefault(tag, {})[marks[i][1]] = event.value
    return scalars


# --------------------------------------------------------------------------- figures


def _plot_series(ax, series: dict[int, float] | None, label: str, scale: float = 1.0) -> None:
    if series:
        epochs = sorted(series)
        ax.plot([e + 1 for e in epochs], [scale * series[e] for e in epochs], marker="o" if len(epochs) < 20 else None,
                markersize=3, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_curves(scalars: Scalars, title: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch (train and validation)."""
    fig = Figure(figsize=CURVES_SIZE, layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    _plot_series(loss_ax, scalars.get("train/loss_epoch", scalars.get("train/loss")), "train")
    _plot_series(loss_ax, scalars.get("val/loss"), "val")
    _plot_series(acc_ax, scalars.get("train/acc"), "train", 100)
    _plot_series(acc_ax, scalars.get("val/acc"), "val", 100)
    lr_tag = next((t for t in sorted(scalars) if t.startswith(("train/lr", "lr-"))), None)  # lr-*: older runs
    _plot_series(lr_ax, scalars.get(lr_tag), lr_tag or "lr")
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy (%)"), (lr_ax, "learning rate (epoch start)")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    best = scalars.get("val/acc")
    if best:
        epoch = max(best, key=best.get)
        acc_ax.plot(epoch + 1, 100 * best[epoch], "*", markersize=10, color="C1",  # in the legend: never on the ticks
                    label=f"best val {100 * best[epoch]:.2f}% (epoch {epoch + 1})")
        acc_ax.legend()
    fig.suptitle(title or "Training curves")
    return fig


def image_grid(images: Tensor, titles: Sequence[str], rows: int, cols: int, figsize: tuple[float, float],
               suptitle: str, fontsize: float, title_lines: int = 1, color: str = "black") -> Figure:
    """Images (float [N, 3, H, W] in [0, 1], real colours: the network normalizes inside) on one white
    canvas, each with its title above: a single axes, which draws far faster than one per image."""
    height, width = images.shape[-2:] if len(images) else (32, 32)
    gap, head = 2, 3 + 3 * title_lines  # canvas pixels between images and above each for its title
    canvas = np.ones((rows * (height + head) + gap, cols * (width + gap) + gap, 3), dtype=np.float32)
    fig = Figure(figsize=figsize)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.95))
    for k, (image, title) in enumerate(zip(images.detach().float().cpu().clamp(0, 1), titles)):
        top, left = (k // cols) * (height + head) + head, (k % cols) * (width + gap) + gap
        canvas[top:top + height, left:left + width] = image.permute(1, 2, 0).numpy()
        ax.text(left + width / 2, top - 0.6, title, ha="center", va="bottom", fontsize=fontsize, color=color)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=12, y=0.985)
    return fig


def plot_misclassified(preds: Predictions, classes: Sequence[str]) -> Figure:
    """The first misclassified test images, each titled ``true -> predicted (confidence)``."""
    index = preds.wrong_index.tolist()
    titles = [f"{classes[int(preds.labels[i])]} -> {classes[int(preds.preds[i])]} ({100 * preds.confidence[i]:.0f}%)"
              for i in index]
    rows = max(GRID_COLUMNS, math.ceil(len(index) / GRID_COLUMNS))
    return image_grid(preds.wrong_images, titles, rows, GRID_COLUMNS, MISCLASSIFIED_SIZE,
                      f"First {len(index)} misclassified test images: true -> predicted (confidence); "
                      f"{preds.errors()} wrong of {len(preds.labels)}", fontsize=10, color="darkred")


def plot_confusion(preds: Predictions, classes: Sequence[str]) -> Figure:
    """Counts, coloured by the share of each true class; per-class accuracy beside the row names."""
    matrix = preds.confusion()
    share = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=CONFUSION_SIZE, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    n = len(classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8 if n <= 10 else 6,
                    color="white" if share[i, j] > 0.5 else "black")
    per_class = preds.per_class_accuracy().tolist()
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{c} ({100 * a:.1f}%)" for c, a in zip(classes, per_class)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (its accuracy)")
    ax.set_title(f"Confusion matrix: {preds.errors()} wrong of {len(preds.labels)} "
                 f"({100 * preds.accuracy():.2f}% accuracy)")
    return fig


def confusion_csv(preds: Predictions, classes: Sequence[str]) -> str:
    """Rows: true class, columns: predicted class, counts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *classes])
    for name, row in zip(classes, preds.confusion().tolist()):
        writer.writerow([name, *row])
    return buffer.getvalue()


def _target_title(target: Tensor, classes: Sequence[str]) -> str:
    """The classes a soft target mixes, largest first, two per line."""
    weights, indices = target.float().sort(descending=True)
    parts = [f"{classes[i]} {100 * w:.0f}%" for w, i in zip(weights.tolist(), indices.tolist()) if w >= 0.005][:4]
    if len(parts) == 1:
        return classes[int(indices[0])]
    return "\n".join(" ".join(parts[k:k + 2]) for k in range(0, len(parts), 2))


def plot_augmented_batch(images: Tensor, targets: Tensor, classes: Sequence[str], title: str = "") -> Figure:
    """The first images of a training batch as the network gets them, titled with their (soft) targets."""
    rows, cols = AUGMENTED_SHAPE
    titles = [_target_title(t, classes) for t in targets[: rows * cols].detach().cpu()]
    return image_grid(images[: rows * cols], titles, rows, cols, AUGMENTED_SIZE,
                      title or "A training batch after augmentation", fontsize=7.5, title_lines=2)


def plot_sweep_curves(curves: Sequence[tuple[str, dict[int, float]]]) -> Figure:
    """Every run's validation accuracy per epoch, one line per run."""
    fig = Figure(figsize=SWEEP_CURVES_SIZE, layout="constrained")
    ax = fig.subplots()
    for label, series in curves:
        _plot_series(ax, series, label, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy of every run of the sweep")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=9)
    return fig


# --------------------------------------------------------------------------- per run


def write_prediction_artefacts(run_dir: str | Path, preds: Predictions, classes: Sequence[str],
                               experiments: Iterable[Any] = (), step: int = 0) -> dict[str, Any]:
    """misclassified.png, confusion_matrix.png/.csv; returns the metrics.json entries they come with."""
    run_dir, experiments = Path(run_dir), list(experiments)
    save_figure(plot_misclassified(preds, classes), run_dir / "misclassified.png", experiments, step)
    save_figure(plot_confusion(preds, classes), run_dir / "confusion_matrix.png", experiments, step)
    write_text(run_dir / "confusion_matrix.csv", confusion_csv(preds, classes))
    per_class = [None if math.isnan(a) else a for a in preds.per_class_accuracy().tolist()]  # None: no images
    return {"test_errors": preds.errors(), "test_per_class_acc": dict(zip(classes, per_class))}


def augmented_title(batch_aug: str) -> str:
    """``batch_aug``: the batch regularizer's class name (NoBatchAug: none)."""
    then = "no batch regularizer" if batch_aug == "NoBatchAug" else batch_aug
    return f"A training batch as the network gets it: per-image augmentation, then {then} (titles: targets)"


def write_curves(run_dir: str | Path, tb_dir: str | Path | None) -> Path | None:
    """curves.png from the run's TensorBoard events; None (and a warning) when there are none."""
    scalars = read_scalars(tb_dir) if tb_dir is not None else {}
    if not scalars:
        log.warning("%s: no per-epoch scalars in TensorBoard events; curves.png not written", run_dir)
        return None
    return save_figure(plot_curves(scalars, f"Training curves: {run_label(run_dir)}"), Path(run_dir) / "curves.png")


def run_label(run_dir: str | Path) -> str:
    """What a run is, for a figure's title: its model and aug choices (from Hydra's record of the run),
    else its directory's name."""
    record = Path(run_dir) / ".hydra" / "hydra.yaml"
    choices = OmegaConf.select(OmegaConf.load(record), "hydra.runtime.choices") if record.is_file() else None
    if not choices or "model" not in choices:
        return Path(run_dir).name
    return f"model={choices['model']}, aug={choices.get('aug')}"


# --------------------------------------------------------------------------- per sweep


def write_sweep_curves(sweep_dir: str | Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """summary_curves.png: the validation accuracy of every finished run, labelled by what the sweep varied
    (``rows`` as sweeps.write_summary has them: with ``swept``, the overrides not every run shares)."""
    curves = []
    for row in (r for r in rows if r.get("status") == "ok"):
        tb_dir = tensorboard_dir(Path(sweep_dir) / row["run"])
        series = read_scalars(tb_dir).get("val/acc") if tb_dir is not None else None
        if series:
            curves.append((row.get("swept") or row["run"], series))
    if not curves:
        log.warning("%s: no run has validation accuracy per epoch; summary_curves.png not written", sweep_dir)
        return None
    return save_figure(plot_sweep_curves(curves), Path(sweep_dir) / "summary_curves.png")
