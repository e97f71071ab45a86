"""Per-layer geometry of a conv net: output size, jump, receptive field, params and MACs.

The receptive-field arithmetic is a pure function (tested against hand-computed values);
``layer_table`` records the convs of a real forward pass in call order, which is the main
path of a residual net whose shortcuts are identities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    layer: str
    output: tuple[int, int, int]
    kernel: int
    stride: int
    dilation: int
    jump: int
    receptive_field: int
    params: int
    macs: int


def receptive_fields(geometry: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(jump, receptive field) after each layer given (kernel, stride, dilation) per layer.

    r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s, starting from r = j = 1.
    """
    jump, rf, out = 1, 1, []
    for kernel, stride, dilation in geometry:
        rf += (kernel - 1) * dilation * jump
        jump *= stride
        out.append((jump, rf))
    return out


def layer_table(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> list[LayerRow]:
    """Run one image through ``model`` and tabulate every Conv2d and Linear in call order."""
    calls: list[tuple[str, nn.Module, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda mod, _inp, out, name=name: calls.append((name, mod, out.shape)))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(1, *input_size, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    geometry = [(m.kernel_size[0], m.stride[0], m.dilation[0]) if isinstance(m, nn.Conv2d) else (1, 1, 1)
                for _, m, _ in calls]
    rows = []
    for (name, m, shape), (k, s, d), (jump, rf) in zip(calls, geometry, receptive_fields(geometry)):
        output = (shape[1], shape[2], shape[3]) if len(shape) == 4 else (shape[1], 1, 1)
        params = sum(p.numel() for p in m.parameters())
        per_output = m.in_channels // m.groups * k * k if isinstance(m, nn.Conv2d) else m.in_features
        rows.append(LayerRow(name, output, k, s, d, jump, rf, params, output[0] * output[1] * output[2] * per_output))
    return rows


def format_table(rows: list[LayerRow], total_params: int) -> str:
    """Markdown table plus totals; ``total_params`` includes BN, which the conv rows leave out."""
    lines = ["| layer | output (C x H x W) | kernel | stride | dilation | jump | receptive field | params | MACs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, h, w = r.output
        lines.append(f"| {r.layer} | {c} x {h} x {w} | {r.kernel} | {r.stride} | {r.dilation} | {r.jump} "
                     f"| {r.receptive_field} | {r.params:,} | {r.macs:,} |")
    macs = sum(r.macs for r in rows)
    lines += ["", f"Receptive field: {rows[-1].receptive_field} px. Trainable parameters: {total_params:,}. "
              f"MACs per image: {macs:,}."]
    return "\n".join(lines)
