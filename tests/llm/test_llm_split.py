"""Layer splits: the capability split is the exact optimum (brute force over every split and
order), the baselines split as documented, and a model that does not fit is an InputError
naming the shortfall."""

from __future__ import annotations

import contextlib
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.errors import InputError
from coinfer.llm.cost import LlmCosts, MemoryModel
from coinfer.llm.decoder import load_causal_lm
from coinfer.llm.split import (
    GIB,
    LlmDevice,
    StageWork,
    capability_split,
    evaluate_split,
    even_split,
    memory_split,
)


def brute(n_layers, devices, mem, work, ctx, links, orders=False) -> float | None:
    best = None
    for devs in itertools.permutations(devices) if orders else [devices]:
        for counts in itertools.product(range(n_layers + 1), repeat=len(devs)):
            if sum(counts) != n_layers:
                continue
            try:
                neck = evaluate_split(
                    "b", devs, counts, mem, work, context=ctx, links=links
                ).bottleneck_s
            except InputError:
                continue
            if neck < math.inf and (best is None or neck < best):
                best = neck
    return best


instances = st.fixed_dictionaries(
    {
        "n": st.integers(1, 7),
        "devices": st.lists(
            st.tuples(st.floats(0.2, 3), st.integers(1, 10)), min_size=1, max_size=4
        ),
        "mem": st.builds(
            MemoryModel,
            st.just(100),
            st.integers(0, 2),
            st.sampled_from([0, 60, 150]),
            st.sampled_from([0, 60, 150]),
        ),
        "work": st.builds(StageWork, st.floats(0.5, 2), st.floats(0, 1), st.floats(0, 2)),
        "ctx": st.integers(0, 40),
        "links": st.booleans(),
        "seed": st.integers(0, 10**6),
    }
)


def _unpack(inst):
    devs = [LlmDevice(f"d{i}", v, m * 100) for i, (v, m) in enumerate(inst["devices"])]
    links = None
    if inst["links"]:  # some pairs have no link at all
        rng = __import__("random").Random(inst["seed"])
        links = {
            (a.name, b.name): rng.uniform(0, 3)
            for a in devs
            for b in devs
            if a != b and rng.random() < 0.8
        }
    return inst["n"], devs, inst["mem"], inst["work"], inst["ctx"], links


@settings(max_examples=80)
@given(inst=instances)
def test_capability_split_is_optimal(inst) -> None:
    n, devs, mem, work, ctx, links = _unpack(inst)
    best = brute(n, devs, mem, work, ctx, links)
    if best is None:
        with pytest.raises(InputError):
            capability_split(n, devs, mem, work, context=ctx, links=links)
        return
    got = capability_split(n, devs, mem, work, context=ctx, links=links)
    assert got.bottleneck_s == pytest.approx(best, rel=1e-9)
    assert sum(got.layer_counts) == n and all(c > 0 for c in got.layer_counts)
    names = [d.name for d in devs]
    assert [names.index(d) for d in got.devices] == sorted(names.index(d) for d in got.devices)
    assert all(
        b <= next(d.mem_bytes for d in devs if d.name == nm)
        for nm, b in zip(got.devices, got.stage_bytes, strict=True)
    )


@settings(max_examples=25)
@given(inst=instances.filter(lambda i: len(i["devices"]) <= 3 and i["n"] <= 5))
def test_best_order_is_optimal_over_orders(inst) -> None:
    n, devs, mem, work, ctx, links = _unpack(inst)
    best = brute(n, devs, mem, work, ctx, links, orders=True)
    if best is None:
        return
    got = capability_split(n, devs, mem, work, context=ctx, links=links, order="best")
    assert got.bottleneck_s == pytest.approx(best, rel=1e-9)


MEM = MemoryModel(
    layer_bytes=GIB // 4, kv_bytes_per_token_layer=1024, embed_bytes=GIB // 8, head_bytes=GIB // 8
)
WORK = StageWork(layer_s=1.0, first_s=0.1, last_s=0.5)


def test_even_and_memory_splits() -> None:
    devs = [
        LlmDevice("a", 1.0, 4 * GIB),
        LlmDevice("b", 1.0, 2 * GIB),
        LlmDevice("c", 1.0, 2 * GIB),
    ]
    assert even_split(10, devs, MEM, WORK, context=64).layer_counts == (4, 3, 3)
    m = memory_split(12, devs, MEM, WORK, context=64)
    assert m.layer_counts == (6, 3, 3) and m.method == "memory"
    assert m.stage_times_s == pytest.approx((6.1, 3.0, 3.5))


def test_capability_beats_or_matches_the_baselines() -> None:
    devs = [
        LlmDevice("fast", 4.0, 2 * GIB),
        LlmDevice("slow", 0.5, 8 * GIB),
        LlmDevice("mid", 1.0, 4 * GIB),
    ]
    cap = capability_split(16, devs, MEM, WORK, context=128)
    assert cap.layer_counts[0] > cap.layer_counts[1]  # the fast device takes more
    for base in (memory_split, even_split):
        with contextlib.suppress(InputError):
            assert cap.bottleneck_s <= base(16, devs, MEM, WORK, context=128).bottleneck_s
    assert (
        capability_split(16, devs, MEM, WORK, context=128, order="best").bottleneck_s
        <= cap.bottleneck_s
    )


def test_a_useless_device_is_skipped() -> None:
    devs = [
        LlmDevice("a", 1.0, 8 * GIB),
        LlmDevice("snail", 0.01, 8 * GIB),
        LlmDevice("b", 1.0, 8 * GIB),
    ]
    got = capability_split(8, devs, MEM, WORK, context=16)
    assert got.devices == ("a", "b")


def test_shortfalls_are_named() -> None:
    devs = [LlmDevice("a", 1.0, GIB), LlmDevice("b", 1.0, GIB)]
    with pytest.raises(InputError, match=r"short by 1\.250 GiB"):
        capability_split(12, devs, MEM, WORK, context=0)
    with pytest.raises(InputError, match="KV cache"):
        even_split(4, devs, MEM, WORK, context=10**6)
    # fits in total, but memory-proportional rounding overloads one device
    devs = [LlmDevice("a", 1.0, int(1.0 * GIB)), LlmDevice("b", 1.0, int(1.1 * GIB))]
    with pytest.raises(InputError, match=r"device b gets 4 layers .* short by 0\.025 GiB"):
        memory_split(7, devs, MEM, WORK, context=0)
    with pytest.raises(InputError, match="no contiguous split"):  # whole layers: 3 + 3 < 7
        capability_split(7, devs, MEM, WORK, context=0)
    # no contiguous split although the total fits: each device holds less than a layer + head
    tiny = [LlmDevice(f"t{i}", 1.0, GIB // 5) for i in range(8)]
    with pytest.raises(InputError, match="no contiguous split"):
        capability_split(3, tiny, MEM, WORK, context=0)
    with pytest.raises(InputError, match="at most 6 devices"):
        capability_split(
            3,
            [LlmDevice(f"x{i}", 1.0, 8 * GIB) for i in range(7)],
            MEM,
            WORK,
            context=0,
            order="best",
        )


def test_gpt2_small_on_three_devices() -> None:
    parts = load_causal_lm("gpt2", meta=True)
    mem = MemoryModel.of(parts)
    costs = LlmCosts(
        5e-3, 1e-4, 1e-8, 2e-3, 1e-4, 1e-6, 1e-7, 1e-2, 1e-3, parts.act_bytes_per_token
    )
    devs = [
        LlmDevice("phone", 0.5, 300 * 2**20),
        LlmDevice("laptop", 2.0, 2 * GIB),
        LlmDevice("board", 1.0, 200 * 2**20),
    ]
    got = capability_split(
        parts.n_layers,
        devs,
        mem,
        StageWork.decode(costs, 1024, 4),
        context=1024,
        batch=4,
        order="best",
    )
    assert sum(got.layer_counts) == 12
    assert got.stage_bytes[got.devices.index("laptop")] >= max(got.stage_bytes) * 0.5
    with pytest.raises(InputError, match="short by"):
        capability_split(parts.n_layers, devs[:1], mem, StageWork.decode(costs, 1024), context=1024)
