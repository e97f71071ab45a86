"""Start a run from a trained network's weights: ``python train.py init_weights=<model.pt2 | x.ckpt | run_dir>``.

Unlike ``resume=`` (same run, same optimizer and schedule, continued), this starts a new run whose
network begins where another one ended, with a fresh optimizer and schedule: fine-tuning, or
finishing the annealing of a run that a time limit stopped early. The weights must fit the run's
``model`` preset exactly.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cifar_lightning.errors import WarmStartError, first_line

PREFIX = "net."  # ClassifierModule.net in checkpoints; tta.TestTimeAveraged.net in TTA programs


def weights_file(path: str | Path) -> Path:
    """``path``, or the ``model.pt2`` of the run directory it names."""
    path = Path(path).expanduser()
    return path / "model.pt2" if path.is_dir() else path


def network_state(path: str | Path) -> dict[str, Tensor]:
    """The network's parameters and buffers stored in an exported program, a Lightning checkpoint or
    a run directory (its ``model.pt2``), with the module prefixes stripped (also what
    :func:`cifar_lightning.runs.load_model` loads a checkpoint with)."""
    path = weights_file(path)
    if not path.is_file():
        raise WarmStartError(f"{path}: no such file; pass a model.pt2, a .ckpt or a run directory")
    try:
        if path.suffix == ".pt2":
            state = dict(torch.export.load(str(path)).state_dict)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:  # a truncated or foreign file: say which, not a traceback
        raise WarmStartError(f"{path}: cannot read weights ({type(e).__name__}: {first_line(e)}); "
                             "pass a model.pt2 or a Lightning .ckpt written by this project") from e
    if any(k.startswith(PREFIX) for k in state):
        state = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def load_state(net: nn.Module, state: dict[str, Tensor], origin: str) -> None:
    """Copy ``state`` into ``net``; every tensor must match by name and shape (``origin`` names it in errors)."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise WarmStartError(f"{origin}: its weights do not fit this model ({first_line(e)}); "
                             "use the model preset it was trained with") from e


def load_network_weights(net: nn.Module, path: str | Path) -> None:
    """Copy the weights at ``path`` into ``net``; every tensor must match by name and shape."""
    load_state(net, network_state(path), f"init_weights={path}")
