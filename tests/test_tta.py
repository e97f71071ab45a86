"""Test-time augmentation (cifar_lightning/tta.py): the views, their mean, and the exported program."""
from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_lightning.export import export_model
from cifar_lightning.runs import tta_settings
from cifar_lightning.tta import TestTimeAveraged, predict_logits, shift, views
from conftest import compose_hydra


def test_a_shift_moves_the_content_and_reflects_at_the_border() -> None:
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    right = shift(x, 1, 0)  # +dx: the view of a crop further right
    torch.testing.assert_close(right[..., :-1], x[..., 1:])
    torch.testing.assert_close(right[..., -1], x[..., -2])  # reflected, as the training crops pad
    down = shift(x, 0, -2)
    torch.testing.assert_close(down[..., 2:, :], x[..., :-2, :])
    torch.testing.assert_close(down[..., 0, :], x[..., 2, :])
    assert shift(x, 0, 0) is x and shift(x, 2, -1).shape == x.shape


def test_views_are_the_image_its_shifts_and_with_flip_their_mirrors() -> None:
    x = torch.rand(2, 3, 8, 8)
    got = views(x, flip=True, shifts=[[1, 1], [-1, 0]])
    want = [x, shift(x, 1, 1), shift(x, -1, 0)]
    assert len(got) == 6
    for g, w in zip(got, want + [v.flip(3) for v in want]):
        torch.testing.assert_close(g, w)
    assert views(x) == [x]


def test_without_tta_settings_the_prediction_is_the_plain_network() -> None:
    """No averaging unless asked for: a caller that passes no TTA settings gets ``net(x)``."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(predict_logits(net, x), net(x))
        torch.testing.assert_close(TestTimeAveraged(net)(x), net(x))


def test_exported_tta_program_is_the_mean_over_the_views_with_the_nets_parameters(tmp_path: Path) -> None:
    """A flip + shift program returns the mean logits of its views (so it cannot tell an image from its
    mirror) and has the network's parameters only: TTA costs compute, not parameters."""
    torch.manual_seed(0)
    net = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model).eval()
    shifts = [[1, 1], [-1, -1]]
    program = torch.export.load(str(export_model(net, tmp_path / "tta.pt2", tta_flip=True,
                                                 tta_shifts=shifts))).module()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = torch.stack([net(v) for v in views(x, True, shifts)]).mean(0)
        torch.testing.assert_close(program(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(predict_logits(net, x, True, shifts), expected, atol=1e-5, rtol=1e-5)
        flip_only = torch.export.load(str(export_model(net, tmp_path / "flip.pt2", tta_flip=True))).module()
        torch.testing.assert_close(flip_only(x.flip(3)), flip_only(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(flip_only(x), (net(x) + net(x.flip(3))) / 2, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in program.parameters()) == sum(p.numel() for p in net.parameters())


def test_a_tta_program_holds_one_copy_of_the_network(tmp_path: Path) -> None:
    """The views go through the network as one batch: ten views add no convolutions to the graph, so the
    file stays the size of the plain program (a pass per view stored ten copies: 1.4 MiB for `strided`)."""
    net = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model).eval()

    def convolutions(path: Path) -> int:
        graph = torch.export.load(str(path)).graph
        return sum(node.target == torch.ops.aten.conv2d.default for node in graph.nodes)

    plain = export_model(net, tmp_path / "plain.pt2")
    tta = export_model(net, tmp_path / "tta.pt2", tta_flip=True, tta_shifts=[[1, 0], [-1, 0], [0, 1], [0, -1]])
    assert convolutions(tta) == convolutions(plain) > 0
    assert tta.stat().st_size < 1.2 * plain.stat().st_size


def test_tta_settings_come_from_the_config_except_for_a_program_that_has_them_built_in(tmp_path: Path) -> None:
    net = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model).eval()
    cfg = OmegaConf.create({"module": {"tta_flip": True, "tta_shifts": [[1, 0]]}})
    assert tta_settings(net, cfg) == (True, [[1, 0]])
    assert tta_settings(net, OmegaConf.create({"module": {}}), flip=True) == (True, [])  # a run older than the options
    program = torch.export.load(str(export_model(net, tmp_path / "tta.pt2", tta_flip=True))).module()
    assert tta_settings(program, cfg, flip=True) == (False, [])  # built in: not averaged twice
