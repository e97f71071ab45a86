"""``python -m cifar_lightning.cli.soup``: the mean of several trainings' weights, tested and exported."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cifar_lightning.cli import evaluate, soup
from cifar_lightning.errors import WarmStartError
from cifar_lightning.export import export_model
from cifar_lightning.warm_start import network_state
from test_warm_start import trained_like_net

DATA = ["data=synthetic", "data.source.num_train=32", "data.source.num_test=16", "data.eval_batch_size=8",
        "data.val_size=8"]


def test_floats_are_averaged_and_counters_kept() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 7.0]), "n": torch.tensor(9)}
    got = soup.average_states([a, b])
    torch.testing.assert_close(got["w"], torch.tensor([2.0, 5.0]))
    assert got["n"] == 5
    with pytest.raises(WarmStartError, match="different tensors.*one model preset"):
        soup.average_states([a, {"w": a["w"]}])
    with pytest.raises(WarmStartError, match="different tensors"):  # same names, another width
        soup.average_states([a, {"w": torch.zeros(3), "n": a["n"]}])


def test_the_soup_holds_the_mean_and_is_tested_and_exported(tmp_path: Path, capsys) -> None:
    first, second = trained_like_net(), trained_like_net()
    with torch.no_grad():
        for p in second.parameters():
            p.mul_(-0.5)
    a, b = export_model(first, tmp_path / "a.pt2"), export_model(second, tmp_path / "b.pt2", tta_flip=True)
    out = tmp_path / "soup.pt2"
    preds = soup.main([str(a), str(b), "model=strided", *DATA, "--device", "cpu", "--tta-flip", "--export", str(out)])
    printed = capsys.readouterr().out
    assert "soup of 2 (flip TTA on" in printed and f"exported to {out}" in printed
    state = network_state(out)
    for name, p in first.named_parameters():  # a TTA program's "net." prefix is stripped on both sides
        torch.testing.assert_close(state[name], (p + dict(second.named_parameters())[name]) / 2, msg=name)
    # the exported soup (flip built in) scores what the soup scored
    rescored = evaluate.main([str(out), *DATA, "--device", "cpu"])
    torch.testing.assert_close(rescored.logits, preds.logits, atol=1e-5, rtol=1e-5)


def test_a_soup_of_one_model_or_of_two_presets_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    strided = export_model(trained_like_net(), tmp_path / "strided.pt2")
    gated = export_model(trained_like_net("gated"), tmp_path / "gated.pt2")
    with pytest.raises(SystemExit):
        soup.main([str(strided), "model=strided", *DATA])
    assert "1 model(s) given: a soup averages two or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        soup.main([str(strided), str(gated), "model=strided", *DATA])
    err = capsys.readouterr().err
    assert "different tensors" in err and "Traceback" not in err
