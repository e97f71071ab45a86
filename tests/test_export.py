"""``model.pt2`` computes what the trained module computes, for any batch size, with nothing of this project."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cifar_lightning.export import export_model, load_exported
from conftest import compose_hydra, options


@pytest.mark.parametrize("preset", options("model"))
def test_exported_program_matches_the_module(preset: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = compose_hydra([f"model={preset}", "data=synthetic"])
    module = instantiate(cfg.module, net=instantiate(cfg.model))  # channels_last, as in training
    net = module.net
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from train mode
        for _ in range(3):
            net.train()(torch.rand(16, 3, 32, 32))
    layout = {name: t.stride() for name, t in net.state_dict().items()}

    path = export_model(net, tmp_path / "model.pt2")  # from train mode, as the training loop may leave it
    assert path == tmp_path / "model.pt2" and path.is_file()
    # Exporting left the trained module alone: every layer still training, its weights still channels_last.
    assert all(m.training for m in net.modules())
    assert {name: t.stride() for name, t in net.state_dict().items()} == layout
    program = load_exported(path)
    # The plain network under its own names (so it is not taken for a program with TTA built in), its
    # weights plain contiguous tensors rather than training's channels_last.
    assert program.state_dict().keys() == net.state_dict().keys()
    assert all(t.is_contiguous() for t in program.state_dict().values())
    net.eval()  # the program is the inference network: BatchNorm's running statistics, not the batch's
    for batch in (1, 3, 17):
        x = torch.rand(batch, 3, 32, 32)
        with torch.no_grad():
            expected, got = net(x), program(x)
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_program_declares_its_batch_range_of_1_to_2_20_images_a_pass(tmp_path: Path) -> None:
    """The dynamic batch dimension's range travels in the file: a runtime that compiles the program sizes for it."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    program = torch.export.load(str(export_model(net, tmp_path / "model.pt2", image_size=4)))
    [batch] = program.range_constraints.values()
    assert (int(batch.lower), int(batch.upper)) == (1, 2**20)
    tta = torch.export.load(str(export_model(net, tmp_path / "tta.pt2", image_size=4, tta_flip=True,
                                             tta_shifts=[[1, 0], [0, 1]])))
    [batch] = tta.range_constraints.values()  # six views of each image in one pass of at most 2**20 images
    assert (int(batch.lower), int(batch.upper)) == (1, 2**20 // 6)
