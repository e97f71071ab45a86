"""Continue a killed run: ``python train.py resume=<run_dir>`` (or ``resume=<file.ckpt>``).

:func:`resume_argv` rewrites that command line before Hydra sees it, so Hydra composes the run's
own config again (its ``.hydra/overrides.yaml``, then any new overrides) and writes into the same
directory: ``train.log`` is appended to, TensorBoard events land in the same ``tensorboard/`` with
the restored global step, and ``metrics.json`` is written when it ends. The checkpoint itself is
loaded by Lightning (``trainer.fit(ckpt_path=..., weights_only=True)``).

:class:`RandomState` stores every random generator in each checkpoint, so a resumed run draws
the same shuffles, augmentations and batch regularizers as the uninterrupted run would have.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cifar_lightning.errors import ResumeError, first_line

LAST = Path("checkpoints") / "last.ckpt"
OVERRIDES = Path(".hydra") / "overrides.yaml"


def checkpoint_path(resume: str | Path) -> Path:
    """The checkpoint ``resume=`` names (a run directory means its ``checkpoints/last.ckpt``), checked readable.

    The check loads it with ``weights_only=True`` (as the resume itself does), so a truncated file
    or one carrying code is refused here with one line.
    """
    path = Path(resume).expanduser()
    ckpt = path / LAST if path.is_dir() else path
    if not ckpt.is_file():
        hint = ("the run stopped before its first epoch ended; start it afresh without resume="
                if path.is_dir() else "pass a run directory or a .ckpt file")
        raise ResumeError(f"resume={resume}: no checkpoint at {ckpt}; {hint}")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files and refused globals raise many different types
        raise ResumeError(f"resume={resume}: cannot load {ckpt} ({type(e).__name__}: {first_line(e)}); "
                          f"resume from another checkpoint in {ckpt.parent} or start afresh") from e
    if not isinstance(state, dict) or "loops" not in state:
        raise ResumeError(f"resume={resume}: {ckpt} holds no training-loop state, so it is not a Lightning "
                          "checkpoint this project wrote; pass <run_dir>/checkpoints/last.ckpt")
    return ckpt


def run_dir_of(ckpt: Path) -> Path | None:
    """The run directory a checkpoint was written in, if it is one of ours (``<run>/checkpoints/x.ckpt``)."""
    run_dir = ckpt.parent.parent
    return run_dir if ckpt.parent.name == LAST.parent.name and (run_dir / OVERRIDES).is_file() else None


def _key(override: str) -> str:
    parsed = OverridesParser.create().parse_overrides([override])[0]
    return parsed.key_or_group + (f"@{parsed.package}" if parsed.package else "")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite a ``resume=<run_dir|ckpt>`` command line to continue that run in its own directory.

    The run's overrides come first, overrides on this command line replace them key by key, and
    ``hydra.run.dir`` points at the run. A checkpoint from outside a run directory is resumed in a
    new run directory with the config as given. Any other command line is returned unchanged.
    """
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), None)
    if value in (None, "", "null"):
        return argv
    run_dir = run_dir_of(checkpoint_path(value).resolve())
    if run_dir is None:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ResumeError(f"resume={value}: resume continues one run; drop -m/--multirun")
    is_override = [not a.startswith("-") and "=" in a for a in argv]
    merged = {_key(o): o for o in OmegaConf.load(run_dir / OVERRIDES) if _key(o) != "resume"}
    merged |= {_key(a): a for a, keep in zip(argv, is_override) if keep}
    merged.setdefault("hydra.run.dir", f"hydra.run.dir={_quote(str(run_dir))}")
    return [a for a, keep in zip(argv, is_override) if not keep] + list(merged.values())


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
