"""The LightningModule's own arithmetic, by direct calls on tiny tensors (no Trainer)."""
from __future__ import annotations

import logging
from functools import partial
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cifar_lightning.distill import Distillation
from cifar_lightning.errors import ConfigError
from cifar_lightning.module import ClassifierModule
from cifar_lightning.tta import predict_logits


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """By hand: the cross-entropy against (1 - e) * targets + e / classes, averaged over the batch."""
    classes = logits.shape[1]
    soft = (1 - smoothing) * targets + smoothing / classes
    return -(soft * logits.log_softmax(1)).sum(1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_the_loss_smooths_hard_labels_and_soft_targets(smoothing: float) -> None:
    """Hard labels (validation, test) and soft targets (training, after a batch regularizer) alike."""
    module = ClassifierModule(nn.Linear(2, 4), optimizer=torch.optim.SGD, label_smoothing=smoothing, num_classes=4)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g) * 3
    labels = torch.tensor([0, 3, 1, 1, 2])
    soft = torch.softmax(torch.randn(5, 4, generator=g), 1)
    expected_hard = smoothed_cross_entropy(logits, F.one_hot(labels, 4).float(), smoothing)
    torch.testing.assert_close(module.loss(logits, labels), expected_hard)
    torch.testing.assert_close(module.loss(logits, soft), smoothed_cross_entropy(logits, soft, smoothing))


def conv_net() -> nn.Sequential:
    """A conv (4-D weight), batch norm (1-D scale and bias) and linear (2-D weight) layer: each kind of parameter."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_defaults_and_what_the_checkpoint_records() -> None:
    """The hyperparameters (saved in every checkpoint, loaded weights_only) are plain values: not the net, the
    factories or the teacher, and TTA shifts as lists of ints whatever numbers they were given as."""
    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD)
    assert dict(module.hparams) == {"weight_decay": 5e-4, "label_smoothing": 0.0, "num_classes": 10,
                                    "channels_last": True, "tta_flip": False, "tta_shifts": [], "compile": False,
                                    "finite_check_every_n_steps": 10}
    shifted = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, tta_shifts=[(np.int64(1), torch.tensor(-2))])
    assert shifted.hparams.tta_shifts == [[1, -2]] and {type(d) for d in shifted.hparams.tta_shifts[0]} == {int}


def test_the_net_is_channels_last_unless_told_otherwise() -> None:
    assert ClassifierModule(conv_net(), optimizer=torch.optim.SGD).net[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    plain = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, channels_last=False)
    assert not plain.net[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_forward_and_test_time_augmented_logits() -> None:
    """forward is the plain net; evaluation averages the flipped and shifted views asked for."""
    net = conv_net().eval()
    module = ClassifierModule(net, optimizer=torch.optim.SGD, tta_flip=True, tta_shifts=[[1, 0]])
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module(x), net(x))
    expected = predict_logits(net, x, flip=True, shifts=[[1, 0]])
    assert not torch.allclose(expected, net(x)) and not torch.allclose(expected, predict_logits(net, x, flip=True))
    torch.testing.assert_close(module.predict_logits(x), expected)


def test_batches_become_float_nchw_and_only_training_batches_are_regularized() -> None:
    images = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2])
    expected = images.permute(0, 3, 1, 2).float() / 255
    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, num_classes=3)
    module._trainer = SimpleNamespace(training=False)
    x, y = module.on_after_batch_transfer((images, labels), 0)
    torch.testing.assert_close(x, expected)
    assert x.is_contiguous(memory_format=torch.channels_last) and y is labels
    module._trainer.training = True  # no aug configured: one-hot targets over num_classes
    x, y = module.on_after_batch_transfer((images, labels), 0)
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, F.one_hot(labels, 3).float())

    def halve(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images / 2, labels.float() + 1

    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, batch_aug=halve, num_classes=3)
    module._trainer = SimpleNamespace(training=True)
    x, y = module.on_after_batch_transfer((images, labels), 0)
    torch.testing.assert_close(x, expected / 2)
    assert torch.equal(y, torch.tensor([1.0, 3.0]))


# Logits that predict class 0 for labels [0, 0, 0, 1]: micro accuracy 3/4, the per-class (macro) mean differs.
LOGITS = torch.tensor([[2.0, 0.0, -1.0], [1.0, 0.5, 0.0], [3.0, -1.0, 0.0], [0.5, 0.2, 0.1]])
LABELS = torch.tensor([0, 0, 0, 1])


def test_training_step_distills_and_accumulates_the_epochs_loss_and_accuracy() -> None:
    """On soft targets (a batch regularizer's) with label smoothing and a teacher: the step returns the distilled
    loss, the epoch's loss is the mean of the steps' and its accuracy is micro (correct / seen) against the
    targets' argmax. (``nn.Identity`` as the net: the images are the logits.)"""
    distill = Distillation(nn.Linear(3, 3), temperature=2.0, weight=0.5)
    module = ClassifierModule(nn.Identity(), optimizer=torch.optim.SGD, label_smoothing=0.1, num_classes=3,
                              channels_last=False, distill=distill, finite_check_every_n_steps=1)
    module._trainer = SimpleNamespace(is_last_batch=False)
    targets = 0.8 * F.one_hot(LABELS, 3).float() + 0.2 / 3
    first = module.training_step((LOGITS, targets), 0)
    expected = distill(LOGITS, LOGITS, smoothed_cross_entropy(LOGITS, targets, 0.1))
    torch.testing.assert_close(first, expected)
    assert not torch.allclose(expected, module.loss(LOGITS, targets))  # the teacher changed it
    second = module.training_step((LOGITS[3:], targets[3:]), 1)  # label 1, predicted 0
    torch.testing.assert_close(module.train_loss.compute(), (first + second) / 2)
    assert module.train_acc.compute().item() == pytest.approx(3 / 5)  # per class it would be (1 + 0) / 2


def logged_calls(module: ClassifierModule, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[object, dict]]:
    """Record the module's ``self.log`` calls, name -> (value, options), instead of handing them to a Trainer."""
    calls: dict[str, tuple[object, dict]] = {}
    monkeypatch.setattr(module, "log", lambda name, value, **options: calls.__setitem__(name, (value, options)))
    return calls


@pytest.mark.parametrize(("step", "should_stop", "fast_dev_run", "logged"), [
    (10, False, False, True),   # a step the logger writes (log_every_n_steps=5)
    (11, False, False, False),  # one it skips
    (11, True, False, True),    # the last step of a stopping run
    (11, False, True, True),    # every step of a fast_dev_run
])
def test_the_step_loss_is_logged_on_the_steps_the_logger_writes(
        step: int, should_stop: bool, fast_dev_run: bool, logged: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    module = ClassifierModule(nn.Identity(), optimizer=torch.optim.SGD)
    module._trainer = SimpleNamespace(log_every_n_steps=5, global_step=step, should_stop=should_stop,
                                      fast_dev_run=fast_dev_run)
    calls = logged_calls(module, monkeypatch)
    loss = torch.tensor(0.5)
    module.on_train_batch_end({"loss": loss}, (LOGITS, LABELS), 0)
    assert calls == ({"train/loss_step": (loss, {"prog_bar": True})} if logged else {})


def test_no_step_loss_without_a_logging_interval_and_the_epochs_metrics_at_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = ClassifierModule(nn.Identity(), optimizer=torch.optim.SGD)
    module._trainer = SimpleNamespace(log_every_n_steps=0, global_step=0, should_stop=False, fast_dev_run=False)
    calls = logged_calls(module, monkeypatch)
    module.on_train_batch_end({"loss": torch.tensor(0.5)}, (LOGITS, LABELS), 0)
    assert calls == {}
    module.on_train_epoch_end()
    assert calls == {"train/loss_epoch": (module.train_loss, {}), "train/acc": (module.train_acc, {})}
    assert calls["train/loss_epoch"][0] is module.train_loss and calls["train/acc"][0] is module.train_acc


class TestOutputs(pl.Callback):
    """What ``test_step`` returns, as Lightning hands it to callbacks (RunArtefacts' confusion matrix reads it)."""

    __test__ = False

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: torch.Tensor,
                          batch: tuple, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.outputs.append(outputs)


def test_validation_and_test_log_the_epochs_loss_and_micro_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a Trainer: the epoch's loss (averaged over processes under DDP) and accuracy, both on the progress
    bar in validation, only the accuracy in test; test_step hands its logits on."""
    module = ClassifierModule(nn.Identity(), optimizer=torch.optim.SGD, label_smoothing=0.1, num_classes=3,
                              channels_last=False)
    sync_dist: dict[str, bool] = {}
    log = module.log
    def spy(name: str, value: object, **options: object) -> None:
        sync_dist[name] = options.get("sync_dist", False)
        log(name, value, **options)
    monkeypatch.setattr(module, "log", spy)
    outputs = TestOutputs()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[outputs])
    loader = DataLoader(TensorDataset(LOGITS, LABELS), batch_size=2)
    loss = smoothed_cross_entropy(LOGITS, F.one_hot(LABELS, 3).float(), 0.1).item()
    [validated] = trainer.validate(module, loader, verbose=False)
    assert validated == pytest.approx({"val/loss": loss, "val/acc": 3 / 4})
    assert {"val/loss", "val/acc"} <= trainer.progress_bar_metrics.keys()
    [tested] = trainer.test(module, loader, verbose=False)
    assert tested == pytest.approx({"test/loss": loss, "test/acc": 3 / 4})
    assert "test/acc" in trainer.progress_bar_metrics and "test/loss" not in trainer.progress_bar_metrics
    assert sync_dist == {"val/loss": True, "val/acc": False, "test/loss": True, "test/acc": False}
    torch.testing.assert_close(torch.cat(outputs.outputs), LOGITS)


def test_weight_decay_falls_on_trainable_conv_and_linear_weights_only() -> None:
    """Batch-norm scales and biases are not decayed, whatever the optimizer's own default; frozen parameters are left
    out of both groups. No scheduler configured: the optimizer alone."""
    net = conv_net()
    net[0].weight.requires_grad_(False)
    net[1].weight.requires_grad_(False)
    module = ClassifierModule(net, optimizer=partial(torch.optim.AdamW, lr=0.01, weight_decay=0.3), weight_decay=0.05)
    config = module.configure_optimizers()
    assert config.keys() == {"optimizer"}
    decay, no_decay = config["optimizer"].param_groups
    assert [id(p) for p in decay["params"]] == [id(net[4].weight)] and decay["weight_decay"] == 0.05
    assert [id(p) for p in no_decay["params"]] == [id(net[0].bias), id(net[1].bias), id(net[4].bias)]
    assert no_decay["weight_decay"] == 0.0


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """conf/module/default.yaml's schedule, shortened: max_lr 0.1, a quarter warming up from max_lr / 10."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total_steps, pct_start=0.25,
                                               div_factor=10)


def test_the_schedule_steps_every_optimizer_step_over_the_whole_run() -> None:
    module = ClassifierModule(conv_net(), optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=one_cycle)
    module._trainer = SimpleNamespace(estimated_stepping_batches=12.0)
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config == {"optimizer": config["optimizer"],
                      "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}
    assert isinstance(config["optimizer"], torch.optim.SGD) and scheduler.optimizer is config["optimizer"]
    assert scheduler.total_steps == 12


def test_a_schedule_too_short_to_build_names_the_settings_to_change() -> None:
    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, scheduler=one_cycle)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(ConfigError) as error:
        module.build_scheduler(optimizer, 4)  # 4 steps x pct_start 0.25: OneCycleLR divides by zero
    assert isinstance(error.value.__cause__, ZeroDivisionError)
    assert str(error.value) == (f"module.scheduler cannot schedule a run of 4 optimizer steps ({error.value.__cause__}); "
                                "change module.scheduler.pct_start or the run's length (trainer.max_epochs, "
                                "trainer.limit_train_batches)")


def start_training(module: ClassifierModule, scheduler: object | None, total: int, global_step: int) -> object | None:
    """``on_train_start`` in a run of ``total`` steps at ``global_step`` (restored from a checkpoint unless 0)
    whose scheduler is ``scheduler``; returns the scheduler the run then goes on with."""
    config = SimpleNamespace(scheduler=scheduler)
    module._trainer = SimpleNamespace(lr_scheduler_configs=[config] if scheduler is not None else [],
                                      estimated_stepping_batches=float(total), global_step=global_step)
    module.on_train_start()
    return config.scheduler


@pytest.mark.parametrize("global_step", [1, 15])
def test_a_resumed_run_of_a_new_length_gets_a_fresh_schedule_for_its_remaining_steps(
        global_step: int, caplog: pytest.LogCaptureFixture) -> None:
    """Planned for 10 steps, resumed as a 16-step run: a new one-cycle over what is left (even a single step),
    on the restored optimizer, at the learning rate a fresh schedule of that length starts at."""
    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, scheduler=one_cycle)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    restored = one_cycle(optimizer, 10)
    caplog.set_level(logging.INFO, logger="cifar_lightning.module")
    scheduler = start_training(module, restored, total=16, global_step=global_step)
    assert scheduler is not restored and scheduler.optimizer is optimizer
    assert scheduler.total_steps == 16 - global_step
    fresh = one_cycle(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), 16 - global_step)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(fresh.get_last_lr()[0])
    assert caplog.messages == [f"resumed as a run of 16 steps (was 10): a new learning-rate schedule over the last "
                               f"{16 - global_step}"]


@pytest.mark.parametrize(("planned", "total", "global_step"), [
    (16, 16, 0),   # a fresh run: configure_optimizers has just built it
    (16, 16, 6),   # resumed with the same length
    (16, 8, 10),   # resumed with fewer steps than were done: nothing left to schedule
    (None, 16, 6),  # a schedule that has no length (StepLR)
])
def test_the_restored_schedule_is_kept_when_the_length_is_the_same_or_nothing_is_left(
        planned: int | None, total: int, global_step: int, caplog: pytest.LogCaptureFixture) -> None:
    module = ClassifierModule(conv_net(), optimizer=torch.optim.SGD, scheduler=one_cycle)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    restored = (torch.optim.lr_scheduler.StepLR(optimizer, step_size=3) if planned is None
                else one_cycle(optimizer, planned))
    caplog.set_level(logging.INFO, logger="cifar_lightning.module")
    assert start_training(module, restored, total, global_step) is restored
    assert start_training(module, None, total, global_step) is None  # no scheduler at all
    assert caplog.messages == []
