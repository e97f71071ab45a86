"""Average the weights of several trainings of one model preset (a uniform "model soup", Wortsman et al.
2022), then test it and optionally export it:

    python -m cifar_lightning.cli.soup <run_dir | model.pt2 | x.ckpt> <another> [...] [key=value ...] [--tta-flip] [--export soup.pt2]

Runs fine-tuned from the same weights (``init_weights=``) stay in one basin of the loss, so their
average is a network too, often better than each; runs trained from different random starts do not
average. BatchNorm running statistics are averaged with the rest (recomputing them on the training set
changed the score by 0.01 points on weights/best.pt2's fine-tunes). The config (data to test on, the
preset to build, TTA) is the first run directory's, else ``conf/`` with the ``key=value`` arguments,
as in :mod:`cifar_lightning.cli.evaluate`.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from cifar_lightning.cli.evaluate import score
from cifar_lightning.errors import WarmStartError, exit_on_user_error
from cifar_lightning.predictions import Predictions
from cifar_lightning.runs import default_device, find_run_dir, load_config, load_datamodule
from cifar_lightning.warm_start import load_state, network_state


def average_states(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of floating-point tensors; integer ones (BN's batch counters) from the first."""
    if len({tuple((k, v.shape) for k, v in s.items()) for s in states}) != 1:  # names and shapes
        raise WarmStartError("the weights to average hold different tensors: pass runs of one model preset")
    return {k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v)
            for k, v in states[0].items()}


def soup(paths: Sequence[str | Path], model_cfg: DictConfig) -> nn.Module:
    """``model_cfg``'s network holding the mean of the weights at ``paths`` (eval mode)."""
    net = instantiate(model_cfg)
    load_state(net, average_states([network_state(p) for p in paths]), f"the soup of {', '.join(map(str, paths))}")
    return net.eval()


def main(argv: Sequence[str] | None = None) -> Predictions:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.cli.soup", description=__doc__.split("\n")[0])
    parser.add_argument("items", nargs="+", metavar="MODEL_OR_KEY=VALUE",
                        help="two or more run directories, model.pt2 or .ckpt files of one preset, then key=value "
                             "config overrides (e.g. model=strided data.root=/data/cifar10)")
    parser.add_argument("--tta-flip", action="store_true", help="average each image's and its mirror's logits too")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--export", metavar="OUT.pt2", help="write the soup as a torch.export program (TTA built in)")
    args = parser.parse_args(argv)
    paths = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    if len(paths) < 2:
        parser.error(f"{len(paths)} model(s) given: a soup averages two or more")
    with exit_on_user_error():
        cfg = load_config(next((d for d in map(find_run_dir, paths) if d is not None), None), overrides)
        datamodule = load_datamodule(cfg)
        model = soup(paths, cfg.model)
        return score(model, cfg, datamodule, f"soup of {len(paths)}", args.tta_flip, args.device, args.export)


if __name__ == "__main__":
    main()
