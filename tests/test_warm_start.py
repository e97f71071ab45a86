"""``init_weights=``: a run starts from another run's network (exported program, TTA program or checkpoint)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from cifar_lightning import training
from cifar_lightning.errors import WarmStartError
from cifar_lightning.export import export_model
from cifar_lightning.warm_start import load_network_weights
from conftest import TINY, compose_hydra


def trained_like_net(preset: str = "strided") -> torch.nn.Module:
    """A network with non-default weights and BN statistics, as a trained one has."""
    torch.manual_seed(0)
    net = instantiate(compose_hydra([f"model={preset}", "data=synthetic"]).model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        net.train()(torch.rand(8, 3, 32, 32))
    return net.eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)


def test_weights_load_from_a_program_a_flip_tta_program_and_a_checkpoint(tmp_path: Path) -> None:
    source = trained_like_net()
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, ckpt)
    for path in (export_model(source, tmp_path / "model.pt2"),
                 export_model(source, tmp_path / "tta.pt2", tta_flip=True), ckpt):
        fresh = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model)
        load_network_weights(fresh, path)
        assert_same_state(fresh, source)
    run_dir = tmp_path  # a run directory means its model.pt2
    fresh = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model)
    load_network_weights(fresh, run_dir)
    assert_same_state(fresh, source)


def test_wrong_preset_missing_or_corrupt_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = export_model(trained_like_net("gated"), tmp_path / "gated.pt2")
    strided = instantiate(compose_hydra(["model=strided", "data=synthetic"]).model)
    with pytest.raises(WarmStartError, match="do not fit this model.*model preset") as e:
        load_network_weights(strided, path)
    assert "\n" not in str(e.value)
    with pytest.raises(WarmStartError, match="no such file"):
        load_network_weights(strided, tmp_path / "missing.pt2")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(WarmStartError, match="cannot read weights"):
        load_network_weights(strided, tmp_path / "broken.ckpt")


def test_a_run_starts_from_init_weights(compose_task, monkeypatch, tmp_path: Path) -> None:
    """At a vanishing learning rate the run's network keeps the weights it started from."""
    source = trained_like_net()
    path = export_model(source, tmp_path / "source.pt2")
    exported = []
    monkeypatch.setattr(training, "export_model", lambda net, out, **_: exported.append(net))
    cfg = compose_task([*TINY, "model=strided", f"init_weights={path}", "module.optimizer.lr=1e-12"],
                       output_dir=tmp_path / "run")
    training.run(cfg)
    [net] = exported
    for (name, got), want in zip(net.named_parameters(), source.parameters()):
        torch.testing.assert_close(got.detach().cpu(), want, msg=name)
