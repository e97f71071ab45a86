"""``module/distill=kd``: a teacher's soft targets in the training loss (cifar_lightning/distill.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lightning import training, validation
from cifar_lightning.distill import Distillation, MeanLogits
from cifar_lightning.errors import ConfigError
from cifar_lightning.export import export_model
from conftest import TINY
from test_warm_start import trained_like_net


class FixedLogits(nn.Module):
    """A teacher that answers ``logits`` whatever it is shown."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_the_loss_mixes_the_hard_loss_with_hintons_soft_loss() -> None:
    torch.manual_seed(0)
    student, teacher, images = torch.randn(6, 10), torch.randn(6, 10), torch.rand(6, 3, 32, 32)
    hard = torch.tensor(1.7)
    t, w = 3.0, 0.25
    p_t, log_p_s = (teacher / t).softmax(1), (student / t).log_softmax(1)
    soft = (p_t * (p_t.log() - log_p_s)).sum(1).mean() * t * t
    got = Distillation(FixedLogits(teacher), temperature=t, weight=w)(student, images, hard)
    torch.testing.assert_close(got, (1 - w) * hard + w * soft)
    assert Distillation(FixedLogits(teacher), weight=0.0)(student, images, hard) == hard
    assert Distillation(FixedLogits(teacher), weight=1.0)(teacher, images, hard).abs() < 1e-6  # agrees: no loss


def test_only_the_student_gets_gradients_and_the_teacher_stays_in_inference_mode(tmp_path: Path) -> None:
    teacher_net = trained_like_net()
    distill = Distillation(export_model(teacher_net, tmp_path / "teacher.pt2"), weight=1.0)
    distill.train()  # what Lightning does to the whole module each epoch: an exported program would raise
    assert distill.training
    assert not any(p.requires_grad for p in distill.teacher.parameters())
    images = torch.rand(4, 3, 32, 32)
    student = trained_like_net().train()
    student_logits = student(images)
    distill(student_logits, images, F.cross_entropy(student_logits, torch.arange(4))).backward()
    assert all(p.grad is not None for p in student.parameters())
    with torch.no_grad():  # the program's BN used running statistics: the same logits as the eval-mode net
        torch.testing.assert_close(distill.teacher(images), teacher_net.eval()(images), rtol=1e-4, atol=1e-4)


def test_a_distilled_run_optimizes_what_distillation_returns(compose_task, monkeypatch, tmp_path: Path) -> None:
    """Every training step goes through the teacher, and its result is the loss that is optimized: when
    it returns zero the student's weights do not move (no weight decay) despite a large learning rate."""
    source = trained_like_net()
    start = export_model(source, tmp_path / "start.pt2")
    teacher = export_model(trained_like_net("gated"), tmp_path / "teacher.pt2")  # any architecture
    calls = []

    def zero_loss(self, student_logits, images, hard_loss):
        calls.append((student_logits.shape, images.shape, self.teacher(images).shape))
        return hard_loss * 0

    monkeypatch.setattr(Distillation, "forward", zero_loss)
    exported = []
    monkeypatch.setattr(training, "export_model", lambda net, out, **_: exported.append(net))
    cfg = compose_task([*TINY, "model=strided", f"init_weights={start}", "module.optimizer.lr=1.0",
                        "module.weight_decay=0", "module/distill=kd", f"module.distill.teacher={teacher}"],
                       output_dir=tmp_path / "run")
    training.run(cfg)
    assert calls == [(torch.Size([16, 10]), torch.Size([16, 3, 32, 32]), torch.Size([16, 10]))] * 2
    [net] = exported
    for (name, got), want in zip(net.named_parameters(), source.parameters()):
        torch.testing.assert_close(got.detach().cpu(), want, msg=name)


def test_a_list_of_teachers_teaches_by_the_mean_of_their_logits(compose_task, tmp_path: Path) -> None:
    """``module.distill.teacher=[a, b]``: both programs are loaded (any architectures), frozen, and the soft
    targets are those of their mean logits."""
    nets = [trained_like_net(), trained_like_net("dilated")]
    paths = [export_model(net, tmp_path / f"teacher{i}.pt2") for i, net in enumerate(nets)]
    cfg = compose_task([*TINY, "module/distill=kd", f"module.distill.teacher=[{paths[0]},{paths[1]}]"],
                       output_dir=tmp_path / "run")
    validation.validate_config(cfg)
    distill = training.build(cfg)[1].distill
    assert isinstance(distill.teacher, MeanLogits) and len(distill.teacher.members) == 2
    assert not any(p.requires_grad for p in distill.teacher.parameters())
    distill.train()
    images, student, hard = torch.rand(4, 3, 32, 32), torch.randn(4, 10), torch.tensor(0.3)
    with torch.no_grad():
        mean = torch.stack([net.eval()(images) for net in nets]).mean(0)
        torch.testing.assert_close(distill(student, images, hard),
                                   Distillation(FixedLogits(mean), weight=distill.weight)(student, images, hard),
                                   rtol=1e-4, atol=1e-4)


def test_a_missing_member_of_a_teacher_list_is_named(compose_task, tmp_path: Path) -> None:
    present = export_model(trained_like_net(), tmp_path / "teacher.pt2")
    cfg = compose_task([*TINY, "module/distill=kd", f"module.distill.teacher=[{present},{tmp_path}/gone.pt2]"],
                       output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"no such exported model: .*gone.pt2; pass a model.pt2") as error:
        validation.validate_config(cfg)
    assert "\n" not in str(error.value) and "teacher.pt2;" not in str(error.value)


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "module.distill.teacher is not set: pass module.distill.teacher=<model.pt2 or run directory>"),
    (["module.distill.teacher=missing.pt2"], "module.distill.teacher=missing.pt2: no such exported model"),
    (["module.distill.teacher=[]"], "module.distill.teacher=[]: name at least one model.pt2 or run directory"),
    (["module.distill.weight=1.5"], "module.distill.weight=1.5: must be a number in [0, 1]"),
    (["module.distill.temperature=0"],
     "module.distill.temperature=0: must be a number > 0"),
])
def test_bad_distillation_settings_are_one_line_errors(compose_task, tmp_path: Path, overrides: list[str],
                                                        expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        validation.validate_config(compose_task([*TINY, "module/distill=kd", *overrides], output_dir=tmp_path))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_teacher_is_a_one_line_error_not_an_instantiation_traceback(compose_task,
                                                                                    tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not a program")
    cfg = compose_task([*TINY, "module/distill=kd", f"module.distill.teacher={broken}"], output_dir=tmp_path)
    validation.validate_config(cfg)  # the file exists: only loading it can tell
    with pytest.raises(ConfigError, match=r"broken.pt2: cannot load it .*pass a model.pt2") as error:
        training.build(cfg)
    assert "\n" not in str(error.value)
