"""Every random generator's state in each checkpoint, so ``resume=`` continues their streams
(see :mod:`cifar_lightning.resume`)."""
from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


class RandomState(pl.Callback):
    """Keep every random generator in the checkpoint, so a resumed run continues their streams.

    Covers torch (CPU and CUDA), numpy, Python's ``random`` and the train transform's own
    generators (Albumentations ``Compose`` ignores the global seeds). At ``setup`` the transform is
    given one generator pair seeded from ``seed``: runs are repeatable, and its transforms draw
    from one stream instead of each from its own OS-seeded one. With ``data.num_workers > 0`` each
    worker holds a copy of the transform, whose state is not checkpointed: resume is then close
    but not bit-exact.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._trainer: pl.Trainer | None = None

    @staticmethod
    def _transform(trainer: pl.Trainer) -> Any:
        transform = getattr(trainer.datamodule, "train_transform", None)
        return transform if hasattr(transform, "set_random_state") else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if (transform := self._transform(trainer)) is not None:
            transform.set_random_state(np.random.default_rng(self.seed), random.Random(self.seed))

    def state_dict(self) -> dict[str, Any]:
        # Plain Python values and tensors only: checkpoints are loaded with weights_only=True.
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                                 "numpy": (kind, keys.tolist(), pos, has_gauss, cached)}
        if torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._trainer is not None and (transform := self._transform(self._trainer)) is not None:
            state["transform"] = (transform.random_generator.bit_generator.state, transform.py_random.getstate())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Applied at once: Lightning restores callbacks before it first iterates the train loader
        (to count the steps), and that iteration already draws from the torch generator."""
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        cuda = state_dict.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        transform = self._transform(self._trainer) if self._trainer is not None else None
        if "transform" in state_dict and transform is not None:
            generator = np.random.default_rng()
            generator.bit_generator.state = state_dict["transform"][0]
            py_random = random.Random()
            py_random.setstate(state_dict["transform"][1])
            transform.set_random_state(generator, py_random)
