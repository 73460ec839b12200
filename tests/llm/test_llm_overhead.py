"""The runtime's per-item overhead (``coinfer.llm.overhead``): the arithmetic on hand-made
worker statistics, the priced step against a step-by-step sum, and one real probe through
worker processes (cached, then read back)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from coinfer.errors import InputError
from coinfer.llm.cost import LlmCosts, decode_tokens_per_s
from coinfer.llm.overhead import (
    SCALE_RANGE,
    OverheadProbe,
    combine,
    overhead_from_stats,
    priced_decode_step_s,
    priced_prefill_s,
    with_measured_overhead,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = str(ROOT / "tests" / "llm" / "llm_models.py")
COSTS = LlmCosts(
    0, 0, 0, decode_fixed_s=1e-3, decode_seq_s=0.0, decode_ctx_s=1e-5,
    embed_token_s=1e-4, head_fixed_s=4e-3, head_token_s=0.0,
)  # fmt: skip


def test_priced_step_is_the_mean_over_the_generation() -> None:
    # 3 layers, first and last, prompt 10, 4 new tokens: steps at 10, 11, 12 cached tokens
    steps = [3 * (1e-3 + 1e-5 * p) + 1e-4 + 4e-3 for p in (10, 11, 12)]
    assert priced_decode_step_s(COSTS, 3, True, True, 10, 4) == pytest.approx(sum(steps) / 3)
    assert priced_decode_step_s(COSTS, 2, False, False, 10, 2) == pytest.approx(
        2 * (1e-3 + 1e-5 * 10)
    )
    with pytest.raises(ValueError):
        priced_decode_step_s(COSTS, 2, False, False, 10, 1)


def test_scale_and_overhead_are_recovered_from_two_item_sizes() -> None:
    """Stats made from known per-device scales and overheads give them back exactly."""
    costs = dataclasses.replace(COSTS, layer_fixed_s=5e-3, layer_token_s=1e-3)
    counts, prompt, new = [2, 1, 1], 10, 5
    scales, ws = [1.0, 1.3, 2.0], [0.002, 0.0025, 0.004]
    stats = []
    for s, n in enumerate(counts):
        first, last = s == 0, s == 2
        pre = priced_prefill_s(costs, n, first, last, prompt)
        dec = priced_decode_step_s(costs, n, first, last, prompt, new)
        d_meas = scales[s] * dec + ws[s]
        p_meas = scales[s] * pre + ws[s]
        # two jobs pooled: one prefill item and 4 decode items each
        stats.append({"cpu_s": 2 * (p_meas + 4 * d_meas), "items": 10,
                      "decode_cpu_s": 8 * d_meas, "decode_items": 8})  # fmt: skip
    probe = overhead_from_stats(costs, ["a", "b", "c"], counts, stats, prompt, new)
    assert probe.scales == pytest.approx(tuple(scales))
    assert probe.item_overhead_s == pytest.approx(0.0025)
    assert probe.speed_scales == pytest.approx({"a": 1.0, "b": 1.3, "c": 2.0})
    # an overhead already in the costs is not subtracted twice
    charged = dataclasses.replace(costs, item_overhead_s=0.1)
    again = overhead_from_stats(charged, ["a", "b", "c"], counts, stats, prompt, new)
    assert again.item_overhead_s == pytest.approx(0.0025)
    # the round trip through the cache's JSON keeps the value
    assert OverheadProbe.from_dict(json.loads(json.dumps(probe.to_dict()))) == probe
    # a wild fit is clamped; a negative overhead is never charged
    wild = [dict(st, decode_cpu_s=st["decode_cpu_s"] * 0.01) for st in stats]
    clamped = overhead_from_stats(costs, ["a", "b", "c"], counts, wild, prompt, new)
    assert all(SCALE_RANGE[0] <= x <= SCALE_RANGE[1] for x in clamped.scales)
    assert clamped.item_overhead_s >= 0
    with pytest.raises(InputError, match="on b ran no decode step"):
        overhead_from_stats(costs, ["a", "b", "c"], counts, [stats[0], {}, stats[2]], 10, 5)
    # jobs combine by their medians: one disturbed job does not move the result
    disturbed = dataclasses.replace(probe, scales=(1.8, 1.3, 2.0), item_overhead_s=0.02)
    both = combine([probe, disturbed, probe])
    assert both.scales == probe.scales and both.item_overhead_s == probe.item_overhead_s


@pytest.mark.integration
def test_a_real_probe_measures_and_caches(tmp_path, monkeypatch) -> None:
    """A probe over two quota'd workers: each stage's CPU per decode step is above zero and
    the overhead is what the cluster's next prediction charges; the second call reads the
    cache (no workers: a broken spec would fail if it started any)."""
    from coinfer.cli.run_cmds import _load_cluster
    from coinfer.llm.decoder import load_causal_lm
    from coinfer.llm.planning import measured_costs

    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    spec = f"{MODELS}:tiny_gpt2"
    parts = load_causal_lm(spec)
    cluster = tmp_path / "two.yaml"
    cluster.write_text(TWO_DEVICES)
    cl = _load_cluster(str(cluster))
    costs = measured_costs(spec, parts)
    charged, probe = with_measured_overhead(spec, parts, costs, cl)
    assert probe.devices == ("d0", "d1") and all(m > 0 for m in probe.decode_measured_s)
    assert all(SCALE_RANGE[0] <= x <= SCALE_RANGE[1] for x in probe.scales)
    assert charged.item_overhead_s == probe.item_overhead_s >= 0
    assert len(list((tmp_path / "llm").glob("overhead-*.json"))) == 1
    one = decode_tokens_per_s([2], [0.6], costs, context=20)
    with_w = decode_tokens_per_s([2], [0.6], charged, context=20)
    assert 1 / with_w == pytest.approx(1 / one + probe.item_overhead_s / 0.6)
    monkeypatch.setattr(
        "coinfer.llm.overhead.probe_overhead",
        lambda *a, **k: pytest.fail("the cached figure was not used"),
    )
    reread, same = with_measured_overhead(spec, parts, costs, cl)
    assert same == probe and reread == charged


TWO_DEVICES = """
name: two
source: d0
devices:
  - name: d0
    kind: cpu
    speed: {gflops: 18.0}
    memory: 1GiB
    emulate: {cpu_quota: 0.6, threads: 1}
  - name: d1
    kind: cpu
    speed: {gflops: 12.0}
    memory: 1GiB
    emulate: {cpu_quota: 0.4, threads: 1}
links:
  - {src: d0, dst: d1, bandwidth_mbps: 1000, latency_ms: 1}
"""
