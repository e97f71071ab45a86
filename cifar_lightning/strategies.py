"""DDP whose workers are started with ``torch.multiprocessing`` (``ddp_spawn``) and report back.

Spawned workers, unlike ``ddp``'s re-launch of ``sys.argv``, keep DDP working inside a Hydra
multirun (Lightning #11300: every re-launched worker would run the whole sweep). Lightning's
spawn launcher hands the main process only the weights, the best checkpoint's path and the
logged metrics; ``training.train`` also reads the best score, the epoch count and the
throughput after ``fit``, so the callbacks' and the fit loop's state come back too.
"""
from __future__ import annotations

import io
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import TrainerFn


def _to_bytes(state: Any) -> bytes:
    """Tensors travel as bytes: a shared-memory tensor dies with the worker that made it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class _ReportingLauncher(_MultiProcessingLauncher):
    """Rank 0 sends its callbacks' ``state_dict`` and the fit loop's progress to the main process."""

    def get_extra_results(self, trainer: pl.Trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        callbacks = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        extra["worker_state"] = _to_bytes({"callbacks": callbacks, "fit_loop": trainer.fit_loop.state_dict()})
        return extra

    def update_main_process_results(self, trainer: pl.Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        state = torch.load(io.BytesIO(extra["worker_state"]), weights_only=True)
        for cb in trainer.callbacks:
            if state["callbacks"].get(cb.state_key):
                cb.load_state_dict(state["callbacks"][cb.state_key])
        if trainer.state.fn == TrainerFn.FITTING:
            trainer.fit_loop.load_state_dict(state["fit_loop"])


class SpawnDDPStrategy(DDPStrategy):
    """``strategy=ddp_spawn`` plus the worker's report (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="spawn", **kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _ReportingLauncher(self, start_method=self._start_method)
