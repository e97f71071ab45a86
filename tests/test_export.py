"""``model.pt2`` computes what the trained module computes, for any batch size, with nothing of this project."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from cifar_lightning.export import export_model
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

    path = export_model(net, tmp_path / "model.pt2")  # from train mode, as the training loop may leave it
    assert net.training  # exporting left the trained module alone
    program = torch.export.load(str(path)).module()
    net.eval()  # the program is the inference network: BatchNorm's running statistics, not the batch's
    for batch in (1, 3, 17):
        x = torch.rand(batch, 3, 32, 32)
        with torch.no_grad():
            expected, got = net(x), program(x)
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
