"""Run and sweep artefacts: PNGs of the right size that are not blank, a confusion matrix that agrees
with the test accuracy, a misclassified grid of misclassified images only, TensorBoard images and
HParams, the study's reference column, and ``report``/``evaluate`` rebuilding them from saved files."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter

from cifar_lightning import plots, runs
from cifar_lightning.cli import evaluate, report
from cifar_lightning.predictions import PredictionCollector, Predictions
from cifar_lightning.sweeps import REFERENCE_ACC, with_reference
from conftest import SWEEP_NUM_TEST as NUM_TEST

RUN_FILES = (*plots.RUN_PNGS, "confusion_matrix.csv")
PNG_SIZES = {"curves.png": plots.CURVES_SIZE, "misclassified.png": plots.MISCLASSIFIED_SIZE,
             "confusion_matrix.png": plots.CONFUSION_SIZE, "augmented_batch.png": plots.AUGMENTED_SIZE,
             "summary_curves.png": plots.SWEEP_CURVES_SIZE}


@pytest.fixture
def sweep(sweep_2x2) -> Path:
    """The session's 2 x 2 sweep (conftest.SWEEP: two epochs, 64 test images); tests that change files copy it."""
    result, sweep_dir = sweep_2x2
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def read_confusion_csv(path: Path) -> tuple[list[str], torch.Tensor]:
    """Class names and the int64 [C, C] matrix of a ``confusion_matrix.csv``."""
    header, *rows = list(csv.reader(path.read_text().splitlines()))
    return header[1:], torch.tensor([[int(v) for v in row[1:]] for row in rows])


def assert_png(path: Path) -> None:
    """Exists, has the size its figure constant says, and shows something (many colours, contrast)."""
    width, height = PNG_SIZES[path.name]
    image = Image.open(path)
    assert image.size == (round(width * plots.DPI), round(height * plots.DPI)), path
    pixels = np.asarray(image.convert("RGB")).astype(np.int32)
    assert pixels.std() > 10, f"{path} is blank"
    colours = pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]
    assert len(np.unique(colours)) > 50, f"{path} is nearly blank"


def test_every_run_has_every_artefact(sweep: Path) -> None:
    runs = run_dirs(sweep)
    assert len(runs) == 4
    for run_dir in runs:
        for name in plots.RUN_PNGS:
            assert_png(run_dir / name)
    for name in ("summary.csv", "summary.md"):
        assert (sweep / name).is_file()
    assert_png(sweep / "summary_curves.png")


def test_confusion_matrix_counts_every_test_image_and_matches_the_accuracy(sweep: Path) -> None:
    for run_dir in run_dirs(sweep):
        classes, matrix = read_confusion_csv(run_dir / "confusion_matrix.csv")
        metrics = metrics_of(run_dir)
        assert classes == [f"class_{i}" for i in range(10)]
        assert int(matrix.sum()) == NUM_TEST
        assert int(matrix.diag().sum()) / NUM_TEST == pytest.approx(metrics["test_acc"], abs=1e-6)
        assert metrics["test_errors"] == NUM_TEST - int(matrix.diag().sum())
        per_class = (matrix.diag() / matrix.sum(1)).tolist()
        assert list(metrics["test_per_class_acc"]) == classes
        assert list(metrics["test_per_class_acc"].values()) == pytest.approx(per_class)


def test_misclassified_images_are_the_misclassified_test_images(sweep: Path) -> None:
    """The grid's images and labels, recomputed from model.pt2: each one is a test image the model gets wrong."""
    run_dir = run_dirs(sweep)[0]
    cfg = runs.load_config(run_dir)
    datamodule = runs.load_datamodule(cfg)
    preds = runs.predict(runs.load_model(run_dir, cfg), datamodule.test_dataloader())
    wrong = preds.wrong_index
    assert len(wrong) == min(25, preds.errors()) > 0
    assert (preds.preds[wrong] != preds.labels[wrong]).all()
    assert wrong.tolist() == (preds.preds != preds.labels).nonzero().flatten()[:25].tolist()  # first ones, in order
    test_images = torch.from_numpy(datamodule.test_set.images[wrong.numpy()]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(preds.wrong_images, test_images)
    torch.testing.assert_close(preds.labels[wrong], torch.from_numpy(datamodule.test_set.labels[wrong.numpy()]))


def test_misclassified_grid_titles_true_and_predicted(tmp_path: Path) -> None:
    logits = torch.full((6, 3), -5.0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    predicted = torch.tensor([0, 2, 2, 1, 0, 2])  # wrong at 1, 3, 4
    logits[torch.arange(6), predicted] = 5.0
    collector = PredictionCollector(max_wrong=2)
    images = torch.rand(6, 3, 32, 32)
    collector.update(images[:3], logits[:3], labels[:3])
    collector.update(images[3:], logits[3:], labels[3:])
    preds = collector.result()
    assert preds.wrong_index.tolist() == [1, 3]  # capped at max_wrong, indices across batches
    torch.testing.assert_close(preds.wrong_images, images[[1, 3]])
    fig = plots.plot_misclassified(preds, ["cat", "dog", "frog"])
    titles = [t.get_text() for t in fig.axes[0].texts]
    assert titles == ["dog -> frog (100%)", "cat -> dog (100%)"]


def test_confusion_of_known_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 0, 0]), 3).float()
    preds = Predictions(logits, labels, torch.empty(0, 3, 32, 32), torch.empty(0, dtype=torch.long))
    assert preds.confusion().tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert preds.errors() == 3 and preds.accuracy() == pytest.approx(0.5)
    assert preds.per_class_accuracy().tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    csv_text = plots.confusion_csv(preds, ["a", "b", "c"])
    assert csv_text.splitlines()[:2] == ["true\\predicted,a,b,c", "a,1,1,0"]


def test_tensorboard_has_the_pictures_and_the_hparams_with_final_metrics(sweep: Path) -> None:
    run_dir = run_dirs(sweep)[1]
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    images = accumulator.Tags()["images"]
    assert {"artefacts/misclassified", "artefacts/confusion_matrix", "artefacts/augmented_batch"} <= set(images)
    hparams = accumulator.PluginTagToContent("hparams")
    # sessions only: TensorBoard then sorts the hyperparameters that differ between runs (model, aug) first
    assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" not in hparams
    start = HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert {"model", "aug", "data"} <= set(start.hparams) and start.hparams["model"].string_value == metrics_of(run_dir)["model"]
    assert "trainer/epoch" in accumulator.Tags()["scalars"] and "epoch" not in accumulator.Tags()["scalars"]
    final = accumulator.Scalars("hparams/test_acc")[-1].value
    assert final == pytest.approx(metrics_of(run_dir)["test_acc"])


@pytest.mark.parametrize("epoch_tag", ["trainer/epoch", "epoch"])  # ours, and Lightning's in older runs
def test_curves_are_read_per_epoch(epoch_tag: str, tmp_path: Path) -> None:
    """Lightning's layout: the epoch logged with each metric, the LR monitor at each epoch's first step."""
    with SummaryWriter(tmp_path) as writer:
        for epoch, (start, end) in enumerate([(0, 2), (3, 5)]):
            writer.add_scalar("train/lr/pg1", 0.1 * (epoch + 1), start)
            writer.add_scalar("val/acc", 0.5 + epoch / 10, end)
            writer.add_scalar(epoch_tag, epoch, end)
    scalars = plots.read_scalars(tmp_path)
    assert scalars["train/lr/pg1"] == pytest.approx({0: 0.1, 1: 0.2})
    assert scalars["val/acc"] == pytest.approx({0: 0.5, 1: 0.6})


def test_figure_titles_name_the_run_and_the_best_epoch_sits_in_the_legend(tmp_path: Path) -> None:
    run_dir = tmp_path / "extra"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: dilated\n      aug: none\n")
    assert plots.run_label(run_dir) == "model=dilated, aug=none"
    assert plots.run_label(tmp_path) == tmp_path.name  # not a Hydra run: its directory's name
    assert "NoBatchAug" not in plots.augmented_title("NoBatchAug") and "RICAP" in plots.augmented_title("RICAP")
    fig = plots.plot_curves({"val/acc": {0: 0.5, 1: 0.7, 2: 0.6}}, "t")
    acc_ax = fig.axes[1]
    assert not acc_ax.texts  # no annotation to collide with the tick labels
    assert "best val 70.00% (epoch 2)" in [t.get_text() for t in acc_ax.get_legend().get_texts()]


def test_summary_compares_with_the_study(sweep: Path) -> None:
    summary = (sweep / "summary.md").read_text()
    assert "study's acc (%)" in summary and "test - study (pp)" in summary
    for run_dir in run_dirs(sweep):
        metrics = metrics_of(run_dir)
        reference = REFERENCE_ACC[(metrics["model"], metrics["aug"])]
        row = next(line for line in summary.splitlines() if line.startswith(f"| {run_dir.name} "))
        assert f"| {100 * reference:.2f} | {100 * (metrics['test_acc'] - reference):+.2f} |" in row
    assert with_reference({"model": "dilated", "aug": "ricap", "test_acc": 0.81})["vs_reference_acc"] == pytest.approx(0.0065)
    assert with_reference({"model": "strided", "aug": "mixup", "test_acc": 0.8})["reference_acc"] is None


def test_report_rebuilds_a_run_without_retraining(sweep: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(run_dirs(sweep)[0], run_dir)
    before = metrics_of(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink()
    (run_dir / "metrics.json").write_text(json.dumps({k: v for k, v in before.items() if not k.startswith("test_p")}))
    report.main([str(run_dir), "--device", "cpu", "--docs", str(tmp_path / "docs")])
    for name in plots.RUN_PNGS:
        assert_png(run_dir / name)
        docs_copy = tmp_path / "docs" / name
        assert Image.open(docs_copy).size == Image.open(run_dir / name).size
        assert docs_copy.stat().st_size < (run_dir / name).stat().st_size
    assert (run_dir / "confusion_matrix.csv").read_text() == (run_dirs(sweep)[0] / "confusion_matrix.csv").read_text()
    assert metrics_of(run_dir) == before


def test_report_tests_the_batches_the_run_tested(sweep: Path, tmp_path: Path) -> None:
    """A run with trainer.limit_test_batches tested part of the test set; report rebuilds its artefacts from that part."""
    run_dir = tmp_path / "run"
    shutil.copytree(run_dirs(sweep)[0], run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("trainer:\n", "trainer:\n  limit_test_batches: 1\n", 1))
    batch = OmegaConf.load(config).data.eval_batch_size
    assert batch < NUM_TEST
    report.report_run(run_dir, device="cpu")
    _, matrix = read_confusion_csv(run_dir / "confusion_matrix.csv")
    assert int(matrix.sum()) == batch


def test_report_rebuilds_a_sweep(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for path in [copy / "summary_curves.png", copy / "summary.md", *(d / n for d in run_dirs(copy) for n in RUN_FILES)]:
        path.unlink()
    report.main([str(copy), "--device", "cpu"])
    assert_png(copy / "summary_curves.png")
    assert (copy / "summary.md").read_text().splitlines()[2:] == (sweep / "summary.md").read_text().splitlines()[2:]
    for run_dir in run_dirs(copy):
        for name in plots.RUN_PNGS:
            assert_png(run_dir / name)


def test_evaluate_a_run_a_checkpoint_and_an_exported_model(sweep: Path, capsys, tmp_path: Path) -> None:
    run_dir = run_dirs(sweep)[1]
    test_acc = metrics_of(run_dir)["test_acc"]
    preds = evaluate.main([str(run_dir), "data.eval_batch_size=10", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert preds.accuracy() == pytest.approx(test_acc) and len(preds.labels) == NUM_TEST
    assert "loading the data" in out and "testing the test set (cpu)" in out  # not silent while it works
    assert f"test accuracy: {100 * test_acc:.2f}%" in out
    assert "class_9" in out and "confusion matrix" in out
    checkpoint = runs.best_checkpoint(run_dir)
    assert checkpoint.name != "last.ckpt"
    from_ckpt = evaluate.main([str(checkpoint), "--device", "cpu"])
    torch.testing.assert_close(from_ckpt.logits, preds.logits, atol=1e-4, rtol=1e-4)
    shutil.copytree(run_dir / ".hydra", tmp_path / ".hydra")  # the export's own run dir: same config
    flipped = evaluate.main([str(run_dir / "model.pt2"), "module.tta_shifts=[[1,0]]", "--tta-flip", "--device",
                             "cpu", "--export", str(tmp_path / "tta.pt2")])
    assert "flip TTA on, shifts [[1, 0]]" in capsys.readouterr().out
    assert not torch.allclose(flipped.logits, preds.logits)
    # the re-exported program has the averaging built in: it scores what the TTA evaluation scored, and is
    # not averaged again although --tta-flip and the config ask for it (views of shifted views would differ)
    rescored = evaluate.main([str(tmp_path / "tta.pt2"), "module.tta_shifts=[[1,0]]", "--tta-flip", "--device", "cpu"])
    assert "TTA built into the program" in capsys.readouterr().out
    torch.testing.assert_close(rescored.logits, flipped.logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(SystemExit):
        evaluate.main([str(run_dir), "data=folder"])
