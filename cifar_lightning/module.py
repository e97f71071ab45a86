"""The LightningModule: soft-target cross-entropy, accuracy metrics, optimizer and schedule from config.

Batches arrive as uint8 NHWC (from the CPU loaders) or already on the device (the GPU path);
``on_after_batch_transfer`` turns them into float NCHW in [0, 1] on the device and, in
training only, applies the batch regularizer selected by the ``aug`` config group.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cifar_lightning.batch_aug import NoBatchAug
from cifar_lightning.data.batches import to_float_nchw
from cifar_lightning.distill import Distillation
from cifar_lightning.errors import ConfigError, DivergenceError
from cifar_lightning.tta import Shifts, predict_logits

log = logging.getLogger(__name__)
# Lightning warns that a module's on_after_batch_transfer is used when a datamodule is passed: that is the
# design here (the device hook belongs to the model's input format, not to the data).
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")

BatchAug = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: decaying BN scales and biases hurts small nets."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ClassifierModule(pl.LightningModule):
    """Image classifier around ``net``; ``batch_aug`` maps (images, labels) -> (images, soft targets);
    ``distill`` (optional) adds a teacher's soft targets to the training loss."""

    # pragma: no mutate start (mutmut wraps a mutated method in a (*args, **kwargs) trampoline, which hides
    # this signature from save_hyperparameters: every test would fail for every mutant)
    def __init__(self, net: nn.Module, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None,
                 batch_aug: BatchAug | None = None, weight_decay: float = 5e-4, label_smoothing: float = 0.0,
                 num_classes: int = 10, channels_last: bool = True, tta_flip: bool = False,
                 tta_shifts: Shifts = (), compile: bool = False, finite_check_every_n_steps: int = 10,
                 distill: Distillation | None = None) -> None:
        super().__init__()
        tta_shifts = [[int(dx), int(dy)] for dx, dy in tta_shifts]  # plain lists: checkpoints load weights_only
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "batch_aug", "distill"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if compile:  # in place: state_dict keys and the exported program stay those of the plain net
            self.net.compile()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.batch_aug = batch_aug or NoBatchAug(num_classes)
        self.distill = distill  # a submodule: moves with the module; its frozen teacher is checkpointed too
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric(nan_strategy="disable")  # its NaN check would make the host wait each step
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # pragma: no mutate end
    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def predict_logits(self, x: Tensor) -> Tensor:
        return predict_logits(self.net, x, self.hparams.tta_flip, self.hparams.tta_shifts)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        images = to_float_nchw(images, self.hparams.channels_last)
        if self.trainer is not None and self.trainer.training:
            return self.batch_aug(images, labels)
        return images, labels

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        logits = self.net(images)
        loss = self.loss(logits, targets)
        if self.distill is not None:
            loss = self.distill(logits, images, loss)
        self.check_finite(loss, batch_idx)
        # Accumulated on the device and logged once an epoch: a self.log call costs Lightning 2.6 about
        # 1 ms of host time (benchmarks/step_overhead.py), a large share of a small net's GPU step.
        self.train_acc.update(logits, targets.argmax(1))
        self.train_loss.update(loss.detach())
        return loss

    def on_train_batch_end(self, outputs: dict[str, Tensor], batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The step's loss, logged only on the steps the logger writes (as Lightning's own
        ``should_update_logs`` decides after an optimizer step; the progress bar shows the latest)."""
        every = self.trainer.log_every_n_steps
        if (every and self.global_step % every == 0) or self.trainer.should_stop or self.trainer.fast_dev_run:
            self.log("train/loss_step", outputs["loss"], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss)
        self.log("train/acc", self.train_acc)

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop a diverged run instead of training, validating and checkpointing NaN weights.

        Reading the loss makes the host wait for the GPU, so it is read every
        ``finite_check_every_n_steps`` steps and on each epoch's last batch; NaN weights stay NaN, so weights
        that went NaN before an epoch's last step are caught there, before validation and the checkpoint.
        """
        every = self.hparams.finite_check_every_n_steps
        if (batch_idx % every and not self.trainer.is_last_batch) or torch.isfinite(loss):
            return
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        raise DivergenceError(f"non-finite loss ({loss.item()}) at step {self.global_step} (epoch "
                              f"{self.current_epoch}, learning rate {lr:.3g}): lower module.optimizer.lr "
                              "or set trainer.gradient_clip_val")

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, metric: MulticlassAccuracy) -> Tensor:
        images, labels = batch
        logits = self.predict_logits(images)
        metric(logits, labels)
        # sync_dist: under DDP the epoch's loss is averaged over every process's shard (a no-op on one device)
        self.log(f"{stage}/loss", self.loss(logits, labels), on_epoch=True, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=True)
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Returns the logits: the RunArtefacts callback builds the confusion matrix from them."""
        return self._eval_step(batch, "test", self.test_acc)

    def build_scheduler(self, optimizer: torch.optim.Optimizer,
                        total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """A step-based schedule told its length (OneCycleLR's ``total_steps``)."""
        try:
            return self.scheduler_factory(optimizer, total_steps=total_steps)
        except ZeroDivisionError as e:  # OneCycleLR when pct_start x total_steps is exactly 1
            raise ConfigError(f"module.scheduler cannot schedule a run of {total_steps} optimizer steps ({e}); "
                              "change module.scheduler.pct_start or the run's length (trainer.max_epochs, "
                              "trainer.limit_train_batches)") from e

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(decay_groups(self.net, self.hparams.weight_decay))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        # "name": the LR monitor's tag, train/lr, groups it with the other training scalars.
        scheduler = self.build_scheduler(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    def on_train_start(self) -> None:
        """A resumed run whose length changed (``resume=<run> trainer.max_epochs=N``) gets a fresh schedule
        for its remaining steps, from the restored weights and optimizer state: a warm restart.

        The restored schedule knows only the old length: OneCycleLR would stop the run with "Tried to step
        N times" past its end, and a shorter run would end mid-cycle at a high learning rate.
        """
        configs = self.trainer.lr_scheduler_configs
        total = int(self.trainer.estimated_stepping_batches)
        remaining = total - self.trainer.global_step
        if not configs or self.trainer.global_step == 0 or remaining < 1:
            return
        config = configs[0]
        planned = getattr(config.scheduler, "total_steps", total)
        if planned == total:
            return
        config.scheduler = self.build_scheduler(config.scheduler.optimizer, remaining)
        log.info("resumed as a run of %d steps (was %d): a new learning-rate schedule over the last %d",
                 total, planned, remaining)
