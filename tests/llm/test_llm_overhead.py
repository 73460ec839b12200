"""The runtime's per-item overhead (``coinfer.llm.overhead``): the arithmetic on hand-made
worker statistics, the priced step against a step-by-step sum, and one real probe through
worker processes (cached, then read back)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from coinfer.errors import InputError
from coinfer.llm.cost import LlmCosts, decode_tokens_per_s
from coinfer.llm.overhead import (
    overhead_from_stats,
    priced_decode_step_s,
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


def test_overhead_is_the_median_extra_cpu_per_step() -> None:
    counts, prompt, new = [2, 1, 1], 10, 5
    priced = [
        priced_decode_step_s(COSTS, n, s == 0, s == 2, prompt, new) for s, n in enumerate(counts)
    ]
    extra = [0.002, 0.0025, 0.009]  # the last stage (head, low quota) pays the most
    stats = [
        {"decode_cpu_s": (p + e) * 4, "decode_items": 4} for p, e in zip(priced, extra, strict=True)
    ]
    probe = overhead_from_stats(COSTS, ["a", "b", "c"], counts, stats, prompt, new)
    assert probe.item_overhead_s == pytest.approx(0.0025)
    assert probe.extra_s == pytest.approx(tuple(extra))
    assert probe.devices == ("a", "b", "c")
    # a measured step faster than priced never gives a negative overhead
    fast = [{"decode_cpu_s": p * 0.5 * 4, "decode_items": 4} for p in priced]
    assert (
        overhead_from_stats(COSTS, ["a", "b", "c"], counts, fast, prompt, new).item_overhead_s == 0
    )
    # an overhead already in the costs is not subtracted twice
    charged = dataclasses.replace(COSTS, item_overhead_s=0.1)
    again = overhead_from_stats(charged, ["a", "b", "c"], counts, stats, prompt, new)
    assert again.item_overhead_s == pytest.approx(0.0025)
    with pytest.raises(InputError, match="on b ran no decode step"):
        overhead_from_stats(COSTS, ["a", "b", "c"], counts, [stats[0], {}, stats[2]], 10, 5)


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
    assert probe.devices == ("d0", "d1") and all(m > 0 for m in probe.measured_s)
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
