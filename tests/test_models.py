"""The study's constraints on every model preset (conf/model/*.yaml), and the receptive-field /
layer-table arithmetic."""
from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cifar_lightning.models.blocks import GatedBlock, IteratedBlock, ResidualBlock, SeparableConv
from cifar_lightning.models.net import Net, Stage, count_parameters
from cifar_lightning.models.receptive_field import LayerRow, format_table, layer_table, receptive_fields
from cifar_lightning.module import decay_groups
from conftest import compose_hydra, options


@pytest.fixture(scope="module", params=options("model"))
def preset(request) -> tuple[str, Net]:
    """(name, network) built from conf/model/<name>.yaml, as train.py builds it."""
    return request.param, instantiate(compose_hydra([f"model={request.param}"]).model)


def test_preset_fits_the_parameter_budget(preset) -> None:
    _, net = preset
    assert 40_000 < count_parameters(net) <= 55_800  # the study's budget, and not a degenerate net


def test_preset_sees_more_than_the_object(preset) -> None:
    """The last conv's receptive field must exceed 44 px (larger than the 32 px image plus margin)."""
    _, net = preset
    rows = layer_table(net)
    assert max(r.receptive_field for r in rows) > 44
    assert rows[-1].layer == "head"


def test_preset_has_no_max_pooling(preset) -> None:
    _, net = preset
    pools = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.FractionalMaxPool2d)
    assert not [m for m in net.modules() if isinstance(m, pools)]
    # nor a functional max_pool call inside a forward
    graph = torch.fx.symbolic_trace(net).graph
    assert not [n for n in graph.nodes if "max_pool" in str(n.target)]


def test_preset_uses_depthwise_convs(preset) -> None:
    _, net = preset
    depthwise = [m for m in net.modules()
                 if isinstance(m, nn.Conv2d) and m.in_channels > 1 and m.groups == m.in_channels]
    assert depthwise


def test_preset_outputs_ten_logits(preset) -> None:
    _, net = preset
    with torch.no_grad():
        assert net.eval()(torch.rand(3, 3, 32, 32)).shape == (3, 10)


def test_the_network_normalizes_its_input_per_channel() -> None:
    """Normalization is the network's first step (the exported program takes [0, 1] images): the net with
    mean m and std s computes on x what the same weights with mean 0 and std 1 compute on (x - m) / s."""
    torch.manual_seed(0)
    mean, std = (0.2, 0.5, 0.7), (0.1, 0.3, 0.6)
    net = Net(stem_channels=4, stages=[Stage(channels=4)], mean=mean, std=std).eval()
    plain = Net(stem_channels=4, stages=[Stage(channels=4)], mean=(0.0,) * 3, std=(1.0,) * 3).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    x = torch.rand(2, 3, 8, 8)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(normalized))


FOUR_STAGE_PRESETS = ["strided", "dilated", "strided_c1wide", "dilated_c1wide", "strided_mid"]  # the study's C1-C4 layout (model=gated stops at 8x8)


@pytest.mark.parametrize("name", FOUR_STAGE_PRESETS)
def test_study_preset_transitions_downsample_to_16_8_4(name) -> None:
    """The study's C2-C4 are entered at 16, 8 and 4 px; the dilated preset gets there without any stride."""
    net = instantiate(compose_hydra([f"model={name}"]).model)
    transitions = [m for m in net.stages if isinstance(m, SeparableConv)]
    sizes = []
    hooks = [t.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:]))) for t in transitions]
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == [(16, 16), (8, 8), (4, 4)]
    depthwise = [t[0] for t in transitions]
    if name.startswith("dilated"):
        assert [(c.stride[0], c.dilation[0], c.padding[0]) for c in depthwise] == [(1, 8, 0), (1, 4, 0), (1, 2, 0)]
        assert not [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    else:
        assert [c.stride[0] for c in depthwise] == [2, 2, 2]


def test_gated_block_keeps_shape_and_is_its_skip_when_the_ffn_is_zero() -> None:
    """With the output 1x1 zeroed the block is exactly its (learned, per-channel) skip; the
    depthwise conv is dilated as asked and its first 1x1 makes it a depthwise-separable conv."""
    block = GatedBlock(8, hidden=6, dilation=2).eval()
    x = torch.randn(2, 8, 5, 5)
    assert block(x).shape == x.shape
    assert (block.depthwise.groups, block.depthwise.dilation, block.expand.out_channels) == (8, (2, 2), 12)
    nn.init.zeros_(block.project.weight)
    nn.init.zeros_(block.project.bias)
    with torch.no_grad():
        block.skip_scale.fill_(0.5)
        assert torch.allclose(block(x), 0.5 * x)


def test_gated_block_skip_scale_gets_no_weight_decay() -> None:
    """Like a BN scale, the skip gain is not pulled toward zero (it would fade the residual path)."""
    block = GatedBlock(8, hidden=6)
    decay, no_decay = decay_groups(block, 5e-4)
    assert any(p is block.skip_scale for p in no_decay["params"])
    assert not any(p is block.skip_scale for p in decay["params"])


def test_iterated_block_shares_one_conv_and_downsamples_by_stride() -> None:
    """One depthwise-separable conv's weights serve every iteration (the stride-2 ones too), each
    iteration has its own BN and mix row; the layer table sees every application with its stride."""
    channels, iterations, history = 8, 5, 3
    block = IteratedBlock(channels, iterations, downsample_at=[1, 3], history=history)
    assert block.depthwise_stride2.weight is block.depthwise.weight
    assert count_parameters(block) == 9 * channels + channels**2 + 2 * channels * iterations + iterations * (history + 1)
    x = torch.randn(2, channels, 9, 9)
    assert block(x).shape == (2, channels, 3, 3)  # 9 -> 5 -> 3, as a stride-2 conv with padding 1 rounds
    rows = layer_table(block, input_size=(channels, 9, 9))
    depthwise = [r for r in rows if r.layer.startswith("depthwise")]
    assert [r.stride for r in depthwise] == [1, 2, 1, 2, 1] and len(rows) == 2 * iterations
    assert depthwise[-1].receptive_field == 1 + 2 * (1 + 1 + 2 + 2 + 4)  # 3x3 kernels at jumps 1, 1, 2, 2, 4


def test_iterated_block_is_its_skip_path_when_the_conv_is_muted() -> None:
    """With the new features weighted 0 the block only carries the latest state forward (through
    fresh eval-mode BNs, ~identity): the input, subsampled at each stride-2 iteration."""
    block = IteratedBlock(4, iterations=4, downsample_at=[0, 2], history=2).eval()
    with torch.no_grad():
        block.mix.view(4, 3)[:, 0] = 0.0
        x = torch.randn(1, 4, 8, 8)
        torch.testing.assert_close(block(x), x[:, :, ::4, ::4], atol=1e-4, rtol=1e-4)
    decay, no_decay = decay_groups(block, 5e-4)
    assert any(p is block.mix for p in no_decay["params"]) and not any(p is block.mix for p in decay["params"])
    with pytest.raises(ValueError, match="downsample_at"):
        IteratedBlock(4, iterations=4, downsample_at=[4])


def test_stage_block_replaces_the_residual_block() -> None:
    assert isinstance(Stage(channels=8).make_block(), ResidualBlock)
    stage = Stage(channels=8, blocks=2, block=lambda c: GatedBlock(c, hidden=4))
    net = Net(stem_channels=8, stages=[stage])
    assert [type(m) for m in net.stages] == [GatedBlock, GatedBlock]
    with pytest.raises(ValueError, match="dilation set beside `block`"):
        Stage(channels=8, dilation=2, block=lambda c: GatedBlock(c, hidden=4)).make_block()


def test_receptive_fields_by_hand() -> None:
    # Start j = 1, r = 1; r += (k - 1) * d * j, then j *= s.
    #   3x3 s1 d1: r = 1 + 2*1*1 = 3,   j = 1
    #   3x3 s2 d1: r = 3 + 2*1*1 = 5,   j = 2
    #   3x3 s1 d2: r = 5 + 2*2*2 = 13,  j = 2
    #   1x1 s1 d1: r = 13 + 0 = 13,     j = 2
    #   3x3 s1 d1: r = 13 + 2*1*2 = 17, j = 2
    geometry = [(3, 1, 1), (3, 2, 1), (3, 1, 2), (1, 1, 1), (3, 1, 1)]
    assert receptive_fields(geometry) == [(1, 3), (2, 5), (2, 13), (2, 13), (2, 17)]
    assert receptive_fields([]) == []


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),              # 0
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False),  # 2: depthwise, dilated
        nn.Conv2d(4, 8, 1),                                               # 3: pointwise, with bias
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),                                                 # 6
    )


def test_layer_table_by_hand() -> None:
    rows = layer_table(tiny_net(), input_size=(3, 8, 8))
    # name, output (C, H, W), (k, s, d), jump, rf, params, MACs -- computed by hand for an 8x8 input:
    # 0: (8 + 2 - 3) // 2 + 1 = 4 px; params 4*3*9 = 108; MACs 4*4*4 outputs * 3*9 = 1728; rf 3, j 2
    # 2: (4 + 4 - 2*2 - 1) + 1 = 4 px; params 4*1*9 = 36; MACs 64 * 1*9 = 576; rf 3 + 2*2*2 = 11
    # 3: 8 x 4 x 4; params 4*8 + 8 = 40; MACs 128 * 4 = 512; rf 11
    # 6: 10 outputs; params 8*10 + 10 = 90; MACs 10 * 8 = 80; counted as 1x1, rf stays 11
    expected = [
        ("0", (4, 4, 4), 3, 2, 1, 2, 3, 108, 1728),
        ("2", (4, 4, 4), 3, 1, 2, 2, 11, 36, 576),
        ("3", (8, 4, 4), 1, 1, 1, 2, 11, 40, 512),
        ("6", (10, 1, 1), 1, 1, 1, 2, 11, 90, 80),
    ]
    got = [(r.layer, r.output, r.kernel, r.stride, r.dilation, r.jump, r.receptive_field, r.params, r.macs)
           for r in rows]
    assert got == expected


def test_layer_table_leaves_the_model_as_it_was() -> None:
    net = tiny_net().train()
    layer_table(net, input_size=(3, 8, 8))
    assert net.training
    assert not any(m._forward_hooks for m in net.modules())


def test_format_table_totals() -> None:
    rows = layer_table(tiny_net(), input_size=(3, 8, 8))
    text = format_table(rows, total_params=count_parameters(tiny_net()))
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + len(rows)  # header + rows
    assert text.endswith("Receptive field: 11 px. Trainable parameters: 274. MACs per image: 2,896.")


def test_layer_table_feeds_one_blank_image_on_the_models_device() -> None:
    """The forward pass costs one image, built where the weights live: a meta-device model (shapes only,
    no memory) is tabulated like a CPU one."""
    net = tiny_net().to("meta")
    seen: list[tuple[torch.Size, torch.device]] = []
    net.register_forward_pre_hook(lambda _m, args: seen.append((args[0].shape, args[0].device)))
    rows = layer_table(net, input_size=(3, 8, 8))
    assert seen == [((1, 3, 8, 8), torch.device("meta"))]
    assert [(r.output, r.receptive_field, r.macs) for r in rows] == \
           [(r.output, r.receptive_field, r.macs) for r in layer_table(tiny_net(), input_size=(3, 8, 8))]


def test_layer_table_reads_non_square_geometry_along_the_height() -> None:
    """Kernel, stride and dilation all come from the height axis, so jump and receptive field describe one
    consistent axis; output keeps H and W apart and MACs count H * W positions."""
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=(2, 1), dilation=(2, 1), padding=(2, 1)),  # 0
        nn.Conv2d(3, 3, kernel_size=(3, 1), padding=(1, 0), bias=False),      # 1
    )
    rows = layer_table(net, input_size=(2, 8, 6))
    # 0: H (8 + 4 - 2*2 - 1) // 2 + 1 = 4, W (6 + 2 - 2 - 1) + 1 = 6; params 3*2*9 + 3 = 57;
    #    MACs 3*4*6 outputs * 2*9 = 1296; rf 1 + 2*2*1 = 5, j 2
    # 1: 3x1 kernel read as k = 3: rf 5 + 2*1*2 = 9, j 2 (its MACs are left out: layer_table counts k * k taps
    #    per input channel, right only for square kernels)
    r0, r1 = rows
    assert (r0.output, r0.kernel, r0.stride, r0.dilation, r0.jump, r0.receptive_field, r0.params, r0.macs) == \
           ((3, 4, 6), 3, 2, 2, 2, 5, 57, 1296)
    assert (r1.output, r1.kernel, r1.stride, r1.dilation, r1.jump, r1.receptive_field) == ((3, 4, 6), 3, 1, 1, 2, 9)


def test_format_table_text() -> None:
    """The whole markdown text, from hand-made rows: header, separator, one line per row with thousands
    separators, a blank line, and the totals, whose receptive field is the last row's."""
    rows = [LayerRow("stem", (16, 32, 32), 3, 1, 1, 1, 3, 432, 442_368),
            LayerRow("down", (16, 16, 16), 3, 2, 1, 2, 5, 144, 36_864),
            LayerRow("mid", (32, 16, 16), 3, 1, 2, 2, 13, 4_608, 1_179_648),
            LayerRow("head", (10, 1, 1), 1, 1, 1, 2, 21, 330, 320)]
    assert format_table(rows, total_params=6_000).splitlines() == [
        "| layer | output (C x H x W) | kernel | stride | dilation | jump | receptive field | params | MACs |",
        "|---|---|---|---|---|---|---|---|---|",
        "| stem | 16 x 32 x 32 | 3 | 1 | 1 | 1 | 3 | 432 | 442,368 |",
        "| down | 16 x 16 x 16 | 3 | 2 | 1 | 2 | 5 | 144 | 36,864 |",
        "| mid | 32 x 16 x 16 | 3 | 1 | 2 | 2 | 13 | 4,608 | 1,179,648 |",
        "| head | 10 x 1 x 1 | 1 | 1 | 1 | 2 | 21 | 330 | 320 |",
        "",
        "Receptive field: 21 px. Trainable parameters: 6,000. MACs per image: 1,659,200.",
    ]


def test_net_defaults_take_rgb_and_give_ten_logits() -> None:
    """A Net given only its layout (a script, a notebook) is a CIFAR-10 classifier: 3-channel images in,
    10 logits out."""
    net = Net(stem_channels=4, stages=[Stage(channels=4)]).eval()
    assert net.stem[0].in_channels == 3
    with torch.no_grad():
        assert net(torch.rand(2, 3, 8, 8)).shape == (2, 10)


def test_normalize_buffers_keep_the_checkpoint_layout() -> None:
    """mean and std are float [1, C, 1, 1] buffers, the layout weights/best.pt2 holds, so they load and follow
    the net's dtype even when a config writes them as integers (``.double()`` skips integer buffers)."""
    net = Net(stem_channels=4, stages=[Stage(channels=4)], mean=(0, 0, 0), std=(1, 1, 1)).double()
    for buffer in (net.normalize.mean, net.normalize.std):
        assert (buffer.shape, buffer.dtype) == ((1, 3, 1, 1), torch.float64)


def test_stage_gives_every_field_to_its_residual_block() -> None:
    """depth, separable, dilation and mid_activation all reach the default block."""
    body = Stage(channels=4, depth=3, separable=True, dilation=2, mid_activation=True).make_block().body
    assert [type(m) for m in body] == [SeparableConv] * 3
    assert [(m[0].groups, m[0].dilation, type(m[1])) for m in body] == [(4, (2, 2), nn.BatchNorm2d)] * 3


def test_net_names_the_misconfigured_stage() -> None:
    """The errors point at the config entry to fix and say how."""
    with pytest.raises(ValueError, match=re.escape("model.stages[1]: channels 8 != incoming 4; "
                                                   "add a transition or match the width")):
        Net(stem_channels=4, stages=[Stage(channels=4), Stage(channels=8)])
    with pytest.raises(ValueError, match=re.escape("model.stages: depth, mid_activation set beside `block`; give "
                                                   "them to the block (e.g. block.dilation) or drop `block`")):
        Stage(channels=8, depth=3, mid_activation=True, block=lambda c: GatedBlock(c, hidden=4)).make_block()
