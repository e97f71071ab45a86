"""Continue a killed run: ``python train.py resume=<run_dir>`` (or ``resume=<file.ckpt>``).

:func:`resume_argv` rewrites that command line before Hydra sees it, so Hydra composes the run's
own config again (its ``.hydra/overrides.yaml``, then any new overrides) and writes into the same
directory: ``train.log`` is appended to, TensorBoard events land in the same ``tensorboard/`` with
the restored global step, and ``metrics.json`` is written when it ends. The checkpoint itself is
loaded by Lightning (``trainer.fit(ckpt_path=..., weights_only=True)``).

:class:`~cifar_lightning.callbacks.random_state.RandomState` stores every random generator in each
checkpoint, so a resumed run draws the same shuffles, augmentations and batch regularizers as the
uninterrupted run would have.
"""
from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
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


def _parse(override: str) -> Override:
    return OverridesParser.create().parse_overrides([override])[0]


def _key(override: str) -> str:
    parsed = _parse(override)
    return parsed.key_or_group + (f"@{parsed.package}" if parsed.package else "")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resume_value(override: str | None) -> str | None:
    """The path of a ``resume=`` override, parsed as Hydra parses it (a quoted path may hold ``=`` and ``,``:
    ``resume='outputs/lr=0.1,bs=256'``); None for no resume (absent, ``resume=``, ``resume=null``)."""
    if override is None:
        return None
    fix = "quote the path for Hydra: \"resume='<run_dir>'\""
    try:
        value = _parse(override).value()
    except OverrideParseException as e:
        raise ResumeError(f"{override}: Hydra cannot read this value ({first_line(e)}); {fix}") from e
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ResumeError(f"{override}: Hydra reads this as a {type(value).__name__}, not one path; {fix}")
    return value


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite a ``resume=<run_dir|ckpt>`` command line to continue that run in its own directory.

    The run's overrides come first, overrides on this command line replace them key by key, and
    ``hydra.run.dir`` points at the run. A checkpoint from outside a run directory is resumed in a
    new run directory with the config as given. Any other command line is returned unchanged.
    """
    value = _resume_value(next((a for a in argv if a.startswith("resume=")), None))
    if value is None:
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
