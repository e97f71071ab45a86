"""Knowledge distillation: ``module/distill=kd module.distill.teacher=<model.pt2 | run_dir>``.

The teacher is any exported program (``model.pt2``; flip TTA built in if it was exported so), so a
teacher of another architecture needs no config of its own; a list of them
(``module.distill.teacher=[a.pt2,b.pt2]``) teaches as one ensemble, by the mean of their logits (as
flip TTA averages views). It sees the same augmented batch as the student (also RICAP/CutMix/MixUp
images, for which its soft labels are more informative than the mixed hard ones) and is never
trained: the program runs in inference mode whatever ``.train()`` says.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifar_lightning.errors import ConfigError, first_line
from cifar_lightning.warm_start import weights_file


TeacherSpec = str | Path | Sequence[str | Path]


class MeanLogits(nn.Module):
    """Several teachers as one: the mean of their logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x).float() for member in self.members]).mean(0)


def load_teacher(teacher: TeacherSpec) -> nn.Module:
    """The frozen callable module of an exported program (or a run directory's ``model.pt2``), or the
    :class:`MeanLogits` of several. (``validation.check_teacher`` has already said, in one line, if a
    file is missing.)"""
    paths = [teacher] if isinstance(teacher, (str, Path)) else list(teacher)
    return load_program(paths[0]) if len(paths) == 1 else MeanLogits([load_program(p) for p in paths])


def load_program(path: str | Path) -> nn.Module:
    """One exported teacher, frozen; an unreadable file is a one-line error naming it."""
    path = weights_file(path)
    try:
        teacher = torch.export.load(str(path)).module()
    except Exception as e:  # a truncated or foreign file: say which, not a traceback
        raise ConfigError(f"module.distill.teacher={path}: cannot load it ({type(e).__name__}: "
                          f"{first_line(e)}); pass a model.pt2 written by this project") from e
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Distillation(nn.Module):
    """Mixes the hard-target loss with Hinton et al.'s soft-target loss:
    ``(1 - weight) * hard + weight * T^2 * KL(teacher_T || student_T)``, logits softened by ``T``."""

    def __init__(self, teacher: TeacherSpec | nn.Module, temperature: float = 4.0, weight: float = 0.5) -> None:
        super().__init__()
        self.teacher = teacher if isinstance(teacher, nn.Module) else load_teacher(teacher)
        self.temperature, self.weight = temperature, weight

    def train(self, mode: bool = True) -> Distillation:
        """Only this module's flag: an exported program has no train mode (and raises if asked)."""
        self.training = mode
        return self

    def forward(self, student_logits: Tensor, images: Tensor, hard_loss: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images).float()
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(teacher_logits / t, 1),
                        reduction="batchmean", log_target=True)
        return (1 - self.weight) * hard_loss + self.weight * t * t * soft
