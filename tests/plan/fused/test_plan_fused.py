"""The fused-layer planner: tile placement, depth search, NFL baseline, CLI (execution: tests/graph/test_graph_tiled.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from coinfer.cli import app
from coinfer.core.evaluate import check_plan, latency_s
from coinfer.core.instance import Link
from coinfer.core.plans import Stage
from coinfer.core.tiles import LayerSpec, tile_plan
from coinfer.errors import InputError
from coinfer.graph.tiled import run_tiled, specs_from_modules
from coinfer.plan import plan
from coinfer.plan.fused.planner import FusedOptions, assign_tiles, conv_instance, plan_fused
from coinfer.testing import random_adv_instance


def _vgg_block() -> list[LayerSpec]:
    conv = lambda ci, co: LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), ci, co)  # noqa: E731
    return [
        conv(3, 32),
        LayerSpec("pointwise", in_ch=32, out_ch=32),
        conv(32, 32),
        LayerSpec("maxpool", (2, 2), (2, 2), in_ch=32, out_ch=32),
        conv(32, 64),
    ]


def _cluster(helpers: int = 3):
    flops = {"phone": 2e9, **{f"e{i}": 10e9 for i in range(helpers)}}
    links = [Link(a, b, 50e6, 1e-3) for a in flops for b in flops if a != b]
    return flops, links


def test_one_tile_on_one_device_reduces_to_reference_model() -> None:
    flops, links = _cluster()
    inst = conv_instance(_vgg_block(), (64, 64), flops, links, "phone")
    tp = tile_plan(_vgg_block(), (64, 64), (1, 1))
    for dev in flops:
        res = assign_tiles(inst, tp, [dev])
        stage = (Stage(0, inst.num_pieces - 1, (dev,)),)
        assert math.isclose(res.latency_s, latency_s(inst, stage), rel_tol=1e-9)


def test_fused_beats_no_fused_layers_with_parallel_helpers() -> None:
    flops, links = _cluster()
    inst = conv_instance(_vgg_block(), (64, 64), flops, links, "phone")
    p = plan_fused(inst)
    check_plan(inst, p)
    f = p.details["fused"]
    assert f["grid"][0] * f["grid"][1] > 1
    assert len(set(f["assignment"])) > 1
    assert f["latency_s"] < p.details["nfl_latency_s"]
    assert p.details["speedup_vs_nfl"] == pytest.approx(p.details["nfl_latency_s"] / f["latency_s"])
    assert set(p.stages[0].devices) == set(f["assignment"])


def test_depth_search_stops_fusing_where_halos_cost_more() -> None:
    # two wide 3x3 convs on 64x64 (much compute, 1-pixel halos: worth tiling), then a 2x2 pool
    # and four 7x7 convs on 32x32 (little compute, 3-pixel halos per layer that pile up and are
    # doubled back through the pool): tiling the tail recomputes more than it saves
    c = lambda ci, co, k: LayerSpec("conv", (k, k), (1, 1), (k // 2, k // 2), (1, 1), ci, co)  # noqa: E731
    layers = [c(3, 64, 3), c(64, 64, 3), LayerSpec("maxpool", (2, 2), (2, 2), in_ch=64, out_ch=64),
              c(64, 8, 7), c(8, 8, 7), c(8, 8, 7), c(8, 8, 7)]  # fmt: skip
    flops, links = _cluster(3)
    inst = conv_instance(layers, (64, 64), flops, links, "phone")
    full = plan_fused(inst, "latency", FusedOptions(search_depth=False))
    best = plan_fused(inst)
    check_plan(inst, best)
    f = best.details["fused"]
    assert f["used"] and 1 <= f["depth"] < inst.num_pieces  # the search stopped early
    # and that was worth it: >10 % faster than fusing all 7 layers, faster than no fusing
    assert f["latency_s"] < 0.9 * full.details["fused"]["latency_s"]
    assert f["latency_s"] < best.details["nfl_latency_s"]
    assert f["suffix_stages"]  # the unfused rest runs layer-wise
    assert best.stages[0].last == f["depth"] - 1
    # why: the tiles of the whole block recompute a larger share than those of the head
    g = tuple(f["grid"])
    assert (
        tile_plan(layers, (64, 64), g).redundancy
        > tile_plan(layers[: f["depth"]], (64, 64), g).redundancy
    )


def test_falls_back_to_nfl_when_fusing_cannot_pay() -> None:
    # helpers behind a 100 kB/s link: shipping tiles costs far more than computing locally
    flops = {"phone": 10e9, "far": 20e9}
    links = [Link("phone", "far", 1e5, 0.05), Link("far", "phone", 1e5, 0.05)]
    inst = conv_instance(_vgg_block(), (32, 32), flops, links, "phone")
    p = plan_fused(inst)
    check_plan(inst, p)
    assert p.details["fused"]["used"] is False
    assert p.predicted.latency_s == pytest.approx(p.details["nfl_latency_s"])
    assert p.details["speedup_vs_nfl"] == pytest.approx(1.0)


def test_single_device_cluster_keeps_one_tile() -> None:
    flops = {"solo": 1e9}
    inst = conv_instance(_vgg_block(), (16, 16), flops, [], "solo")
    p = plan_fused(inst)
    assert p.details["fused"]["latency_s"] == pytest.approx(p.details["nfl_latency_s"])


def test_registry_path_and_plain_instance_refusal() -> None:
    flops, links = _cluster(2)
    inst = conv_instance(_vgg_block(), (32, 32), flops, links, "phone")
    p = plan(inst, "fused", "latency", max_tiles=4, search_depth=False)
    assert p.details["fused"]["grids_tried"] == 8  # 1x1..1x4, 2x1, 2x2, 3x1, 4x1
    assert p.details["fused"]["depth"] == inst.num_pieces
    plain = random_adv_instance(0, 4, 2)
    with pytest.raises(InputError, match="conv layer spec"):
        plan(plain, "fused", "latency")
    with pytest.raises(InputError, match="fused needs a conv layer spec"):
        plan_fused(plain)
    with pytest.raises(InputError, match="latency"):
        plan_fused(inst, "throughput")
    spec_opts = FusedOptions(layers=tuple(_vgg_block()), input_hw=(32, 32))
    assert plan_fused(inst, "latency", spec_opts).details["fused"]["latency_s"] > 0


def test_untileable_layers_are_refused() -> None:
    with pytest.raises(InputError, match="eval mode"):
        specs_from_modules([nn.BatchNorm2d(3)], 3)
    with pytest.raises(InputError, match="ceil_mode"):
        specs_from_modules([nn.MaxPool2d(2, ceil_mode=True)], 3)
    with pytest.raises(InputError, match="cannot tile"):
        specs_from_modules([nn.Flatten()], 3)
    with pytest.raises(InputError, match="zero padding"):
        specs_from_modules([nn.Conv2d(3, 3, 3, padding="same")], 3)
    with pytest.raises(InputError, match="channels"):
        specs_from_modules([nn.Conv2d(4, 3, 3)], 3)
    with pytest.raises(InputError, match="grid"):
        run_tiled(nn.Sequential(nn.Conv2d(1, 1, 3)), torch.zeros(1, 1, 5, 5), (4, 1))
    with pytest.raises(InputError, match="kind"):
        LayerSpec.from_dict({"kind": "lstm"})


def test_cli_plans_fused_from_instance_file_and_refuses_plain(tmp_path) -> None:
    flops, links = _cluster(2)
    inst = conv_instance(_vgg_block(), (32, 32), flops, links, "phone")
    good, bad = tmp_path / "conv.json", tmp_path / "plain.json"
    inst.save(good)
    random_adv_instance(0, 4, 2).save(bad)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["plan", "--instance", str(good), "--algo", "fused", "--objective", "latency", "--json"],
    )
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["algo"] == "fused" and "fused" in data["details"]
    # the table shows the reference model's replica view; a line says what the tiles do
    shown = runner.invoke(
        app, ["plan", "--instance", str(good), "--algo", "fused", "--objective", "latency"]
    )
    assert shown.exit_code == 0, shown.output
    f = data["details"]["fused"]
    assert f["used"] and f"tiled latency {f['latency_s'] * 1e3:.1f} ms" in shown.output.replace(
        "\n", " "
    )
    # the real entry point (main) turns the InputError into one line and exit code 2
    no = subprocess.run(
        [
            sys.executable,
            "-m",
            "coinfer",
            "plan",
            "--instance",
            str(bad),
            "--algo",
            "fused",
            "--objective",
            "latency",
        ],
        capture_output=True,
        text=True,
    )
    assert no.returncode == 2
    assert "conv layer spec" in no.stderr + no.stdout
    assert "Traceback" not in no.stderr


def test_nfl_baseline_is_the_exact_layer_wise_optimum() -> None:
    from coinfer.plan._shared import exhaustive_best
    from coinfer.plan.fused.planner import nfl_latency

    for seed in range(8):
        inst = random_adv_instance(300 + seed, 6, 3, tight_memory=seed % 2 == 0)
        value, stages = nfl_latency(inst)
        assert math.isclose(value, exhaustive_best(inst, "latency")[0], rel_tol=1e-9)
        assert math.isclose(latency_s(inst, stages), value, rel_tol=1e-9)


# -- per-piece layer groups (a captured model's tileable pieces) and re-pricing -------------------
def _grouped_instance():
    """The VGG block as 3 pieces of 2, 2 and 1 layers (plus a last piece nothing can tile)."""
    flops, links = _cluster()
    layers = _vgg_block()
    inst = conv_instance(layers, (64, 64), flops, links, "phone")
    # merge per-layer pieces into pieces [0,1], [2,3], [4]; add a tail piece
    from coinfer.core.instance import Instance, Piece

    groups = [(0, 1), (2, 3), (4, 4)]
    pieces = [
        Piece(
            f"p{i}",
            {d: sum(inst.pieces[k].time_s[d] for k in range(a, b + 1)) for d in flops},
            max(inst.pieces[k].mem_bytes for k in range(a, b + 1)),
            inst.pieces[b].out_bytes,
        )
        for i, (a, b) in enumerate(groups)
    ]
    pieces.append(Piece("tail", {d: 1e6 / f for d, f in flops.items()}, 1000, 40))
    meta = {
        "conv_piece_layers": [[s.to_dict() for s in layers[a : b + 1]] for a, b in groups],
        "conv_input_hw": [64, 64],
    }
    return Instance(tuple(pieces), inst.input_bytes, inst.devices, inst.links, "phone", meta=meta)


def test_grouped_layers_choose_a_depth_within_the_tileable_pieces() -> None:
    inst = _grouped_instance()
    p = plan(inst, "fused", "latency", link_model="links")
    check_plan(inst, p)
    f = p.details["fused"]
    assert f["used"] and 1 <= f["depth"] <= 3  # never the untileable tail
    assert p.stages[0] == Stage(0, f["depth"] - 1, p.stages[0].devices)
    assert p.stages[-1].last == inst.num_pieces - 1


def test_price_fused_reproduces_the_planners_figure_and_orders_models() -> None:
    from coinfer.plan.fused import price_fused

    inst = _grouped_instance()
    for model in ("serial", "links"):
        p = plan(inst, "fused", "latency", link_model=model)
        priced = price_fused(inst, p, model)
        assert priced["latency_s"] == pytest.approx(p.details["fused"]["latency_s"], rel=1e-9)
        assert priced["block_s"] == pytest.approx(p.details["fused"]["block_latency_s"], rel=1e-9)
        # the same placement never costs more with per-device links than without overlap
        assert (
            price_fused(inst, p, "links")["latency_s"]
            <= price_fused(inst, p, "serial")["latency_s"] + 1e-12
        )


def test_price_fused_refuses_a_layer_wise_plan() -> None:
    from coinfer.plan.fused import price_fused

    inst = _grouped_instance()
    p = plan(inst, "dp", "latency")
    with pytest.raises(InputError, match="not a fused plan"):
        price_fused(inst, p)


def test_bad_piece_groups_are_one_line_errors() -> None:
    inst = _grouped_instance()
    from dataclasses import replace

    bad = replace(inst, meta={**inst.meta, "conv_piece_layers": [[]]})
    with pytest.raises(InputError, match=r"conv_piece_layers\[0\]"):
        plan(bad, "fused", "latency")
