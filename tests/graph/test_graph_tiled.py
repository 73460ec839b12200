"""Tiled execution of fused conv blocks: every tile through every layer equals the untiled model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from coinfer.core.tiles import LayerSpec, output_hw, tile_plan, tile_regions
from coinfer.graph.tiled import run_tiled


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiles are tiny ops: on the shared 2-core box intra-op threads only contend (measured
    ~40x slower with 2 threads under load), so these tests run single-threaded, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mixed_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 5, 2, 2),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 16, 3, 1, 2, dilation=2, groups=2),
        nn.AvgPool2d(2, 2, 1),
        nn.Conv2d(16, 4, 1),
    ).eval()


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2), (1, 4), (5, 6)])
def test_tiled_run_matches_untiled(grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = _mixed_net()
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        ref = net(x)
    out = run_tiled(net, x, grid)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    pk=st.integers(2, 3),
    h=st.integers(8, 24),
    w=st.integers(8, 24),
    gh=st.integers(1, 3),
    gw=st.integers(1, 3),
    seed=st.integers(0, 100),
)
def test_random_conv_stacks_tile_exactly(k, s, d, pk, h, w, gh, gw, seed) -> None:
    torch.manual_seed(seed)
    pad = (d * (k - 1)) // 2
    net = nn.Sequential(
        nn.Conv2d(2, 3, k, s, pad, dilation=d),
        nn.ReLU(),
        nn.MaxPool2d(pk, pk, pk // 2),
        nn.Conv2d(3, 2, 3, 1, 1),
    ).eval()
    x = torch.randn(1, 2, h, w)
    with torch.no_grad():
        ref = net(x)
    gh, gw = min(gh, ref.shape[2]), min(gw, ref.shape[3])
    torch.testing.assert_close(run_tiled(net, x, (gh, gw)), ref, rtol=1e-5, atol=1e-5)


def test_pooling_and_activations_are_bit_exact() -> None:
    net = nn.Sequential(
        nn.MaxPool2d(3, 2, 1), nn.ReLU(), nn.AvgPool2d(3, 1, 1), nn.MaxPool2d(2, 2)
    ).eval()
    x = torch.randn(1, 4, 33, 29)
    assert torch.equal(run_tiled(net, x, (3, 2)), net(x))


def test_tile_geometry_and_halo_redundancy() -> None:
    specs = (LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), 1, 1),)
    sizes = output_hw(specs, (8, 8))
    assert sizes == [(8, 8), (8, 8)]
    # output rows 4..7, cols 0..3 need input rows 3..7 (one halo row above; bottom is padding)
    assert tile_regions(specs, sizes, (4, 8, 0, 4)) == [(3, 8, 0, 5), (4, 8, 0, 4)]
    one = tile_plan(specs, (8, 8), (1, 1))
    assert one.redundancy == 0.0
    four = tile_plan(specs, (8, 8), (2, 2))
    assert four.redundancy == 0.0  # a single conv layer recomputes nothing: halos are only inputs
    deep = (specs[0],) * 4
    assert tile_plan(deep, (8, 8), (2, 2)).redundancy > 0.0  # stacked layers recompute halos
    cover = set()
    for t in tile_plan(deep, (8, 8), (3, 3)).tiles:
        r0, r1, c0, c1 = t.regions[-1]
        cells = {(r, c) for r in range(r0, r1) for c in range(c0, c1)}
        assert not cover & cells
        cover |= cells
    assert cover == {(r, c) for r in range(8) for c in range(8)}


# -- the tileable prefix of a captured model ----------------------------------------------------
def test_fusable_prefix_stops_at_the_first_untileable_piece():
    from coinfer.graph import capture
    from coinfer.graph.tiled import fusable_meta, fusable_prefix
    from coinfer.zoo import load_model

    model, x = load_model("tiny_cnn")
    g = capture(model, x)
    prefix = fusable_prefix(g)
    kinds = [[type(m).__name__ for m in mods] for mods in prefix]
    # conv/BN/ReLU, conv/ReLU, conv/ReLU tile; the adaptive pool does not
    assert kinds == [["Conv2d", "BatchNorm2d", "ReLU"], ["Conv2d", "ReLU"], ["Conv2d", "ReLU"]]
    assert prefix[0][0] is model[0]  # the model's own modules, not copies
    meta = fusable_meta(g)
    assert meta["conv_input_hw"] == [32, 32]
    assert [len(grp) for grp in meta["conv_piece_layers"]] == [3, 2, 2]
    assert meta["conv_piece_layers"][1][0]["stride"] == [2, 2]


def test_fusable_prefix_stops_before_a_value_read_by_a_skip():
    from coinfer.graph import capture
    from coinfer.graph.tiled import fusable_prefix

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.ReLU()
            self.c = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.b(self.a(x))
            return self.c(y) + y

    g = capture(Skip().eval(), (torch.randn(1, 3, 8, 8),))
    prefix = fusable_prefix(g)
    # a and b may be tiled (b's output is one cut tensor); c's input is also read by the add
    flat = [type(m).__name__ for mods in prefix for m in mods]
    assert flat[:2] == ["Conv2d", "ReLU"] and "Conv2d" not in flat[2:]


def test_no_prefix_for_a_model_without_a_4d_input():
    from coinfer.graph import capture
    from coinfer.graph.tiled import fusable_meta
    from coinfer.zoo import load_model

    model, x = load_model("tiny_mlp")
    assert fusable_meta(capture(model, x)) == {}


def test_run_tile_is_one_tile_of_run_tiled():
    from coinfer.graph.tiled import run_tile, specs_from_modules

    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2)).eval()
    x = torch.randn(1, 3, 12, 10)
    specs = specs_from_modules(list(net), 3)
    sizes = output_hw(specs, (12, 10))
    full = run_tiled(net, x, (2, 2))
    regs = tile_regions(specs, sizes, (3, 6, 0, 2))
    a = regs[0]
    t = run_tile(list(net), specs, regs, x[:, :, a[0] : a[1], a[2] : a[3]])
    assert torch.equal(t, full[:, :, 3:6, 0:2])
    assert torch.allclose(full, net(x), atol=1e-6)
