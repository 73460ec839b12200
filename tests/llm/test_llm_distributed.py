"""Distributed generation across real worker processes (``coinfer.llm.distributed``) and
``coinfer generate``.

- greedy tokens identical to the unsplit model's for 1, 2 and 4 stages (GPT-2, Llama, the
  zoo's plain GPT-2), with and without token slicing, 1 and 3 sequences in micro-batches;
- a worker killed mid-run: one ``PeerError`` naming its device; no process, cgroup or temp
  dir left behind (also checked after every normal run and after Ctrl-C mid-run);
- the planner: one sequence goes to the fastest device that holds the model, many sequences
  spread over the pipeline, and its predicted rate is never below the baselines';
- the CLI: the ``--json`` fields, bad input exit 2 with one line, and a model too large for
  any one device of ``examples/clusters/llm_tight.yaml`` running across it (refused on one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coinfer.errors import PeerError
from coinfer.llm.cost import LlmCosts
from coinfer.llm.decoder import load_causal_lm
from coinfer.llm.distributed import DistributedGenerator, StageSpec
from coinfer.llm.pipeline import build_stages, generate
from coinfer.llm.planning import group_sizes, plan_generation
from coinfer.llm.simulate import decode_rate
from coinfer.runtime.emulation import CGROUP_CPU_ROOT

ROOT = Path(__file__).resolve().parents[2]
MODELS = str(ROOT / "tests" / "llm" / "llm_models.py")
TESTBED = str(ROOT / "examples" / "clusters" / "local_testbed.yaml")
TIGHT = str(ROOT / "examples" / "clusters" / "llm_tight.yaml")
QUOTAS = [(0.6, 0), (0.4, 1), (0.3, 1), (0.2, 0)]
LINK = {"bandwidth_Bps": 1.25e8, "latency_s": 0.001}


def _stages(counts: list[int]) -> tuple[list[StageSpec], list[dict]]:
    bounds = [0]
    for n in counts:
        bounds.append(bounds[-1] + n)
    specs = [
        StageSpec(f"d{i}", bounds[i], bounds[i + 1], QUOTAS[i][0], 1, QUOTAS[i][1])
        for i in range(len(counts))
    ]
    links = [{(i + 1) % len(counts): LINK} if len(counts) > 1 else {} for i in range(len(counts))]
    return specs, links


def _assert_clean(gen: DistributedGenerator, pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list(CGROUP_CPU_ROOT.glob(f"coinfer-{gen.run_id}-*"))
    assert gen.tmp is None and gen.procs == []


def _prompts(lengths: list[tuple[int, int]], seed: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 256, (b, n), generator=gen) for b, n in lengths]


CASES = [("tiny_gpt2", [4]), ("tiny_gpt2", [2, 2]), ("tiny_gpt2", [1, 1, 1, 1]),
         ("tiny_llama", [1, 2, 3]), ("tiny_plain_gpt2", [3, 1])]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(("factory", "counts"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_tokens_identical_to_the_unsplit_model(factory: str, counts: list[int]) -> None:
    spec = f"{MODELS}:{factory}"
    parts = load_causal_lm(spec)
    ref = build_stages(parts, [parts.n_layers])
    specs, links = _stages(counts)
    new = 6
    with DistributedGenerator(spec, specs, links, timeout_s=120) as gen:
        pids = [p.pid for p in gen.procs]
        # one sequence, no slicing
        one = _prompts([(1, 9)])
        res = gen.generate(one, new)
        assert torch.equal(res.tokens[0], generate(ref, one[0], new))
        assert res.ttft_s > 0 and res.decode_tokens_per_s is not None
        # three sequences in micro-batches of different prompt lengths, token-sliced prefill
        groups = _prompts([(2, 11), (1, 7)], seed=7)
        seen: list[tuple[int, int]] = []
        res = gen.generate(
            groups, new, [[4, 7], [1, 3, 3]], on_token=lambda g, r, _: seen.append((g, r))
        )
        for ids, out in zip(groups, res.tokens, strict=True):
            assert torch.equal(out, generate(ref, ids, new))
        assert sorted(seen) == [(g, r) for g in range(2) for r in range(new)]
        # every stage holds the KV of both groups: (prompt + new − 1) tokens × batch per layer
        kv_token = 2 * parts.n_kv_heads * parts.head_dim * 4
        for n, st in zip(counts, res.stats, strict=True):
            assert st["kv_bytes"] == n * kv_token * (2 * (11 + new - 1) + (7 + new - 1))
    _assert_clean(gen, pids)


@pytest.mark.integration
def test_a_worker_killed_mid_run_fails_with_one_line_naming_it() -> None:
    spec = f"{MODELS}:tiny_llama"
    specs, links = _stages([2, 2, 2])
    gen = DistributedGenerator(spec, specs, links, timeout_s=60)
    pids: list[int] = []

    def kill(group: int, step: int, _: list[int]) -> None:
        if step == 2:
            os.killpg(pids[1], signal.SIGKILL)

    with pytest.raises(PeerError) as err, gen:
        pids.extend(p.pid for p in gen.procs)
        gen.generate(_prompts([(1, 8)]), 200, on_token=kill)
    msg = str(err.value)
    assert "\n" not in msg and "device d1 (stage 2 of 3)" in msg and "signal 9" in msg
    assert err.value.device == "d1"
    _assert_clean(gen, pids)


@pytest.mark.integration
def test_ctrl_c_mid_run_leaves_nothing_behind() -> None:
    specs, links = _stages([1, 1, 2])
    gen = DistributedGenerator(f"{MODELS}:tiny_gpt2", specs, links, timeout_s=60)

    def interrupt(group: int, step: int, _: list[int]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), gen:
        pids = [p.pid for p in gen.procs]
        gen.generate(_prompts([(2, 5)]), 100, on_token=interrupt)
    _assert_clean(gen, pids)


def _costs() -> LlmCosts:
    """GPT-2 small's coefficients as measured on the 2-core development machine."""
    return LlmCosts(
        layer_fixed_s=3.7e-3, layer_token_s=1.5e-4, layer_pair_s=7.8e-8,
        decode_fixed_s=7.0e-4, decode_seq_s=8.3e-4, decode_ctx_s=1.1e-6,
        embed_token_s=1.9e-6, head_fixed_s=1.1e-2, head_token_s=1.3e-3, act_bytes_per_token=3072,
    )  # fmt: skip


def test_the_plan_fits_the_workload() -> None:
    from coinfer.cli.run_cmds import _load_cluster

    parts = load_causal_lm("gpt2", meta=True)
    cl = _load_cluster(TESTBED)
    kw = {"prompt_tokens": 64, "new_tokens": 16}
    one = plan_generation(parts, cl, _costs(), **kw)
    assert one.devices == ("d0",) and one.layer_counts == (12,)  # fits; no pipelining for one
    rates = {}
    for algo in ("capability", "memory", "even"):
        for s in (1, 8):
            p = plan_generation(parts, cl, _costs(), algo=algo, sequences=s, **kw)
            rates[algo, s] = p.predicted_tokens_per_s
            assert sum(p.layer_counts) == 12 and sum(p.group_sizes) == s
    for s in (1, 8):
        assert rates["capability", s] >= max(rates["memory", s], rates["even", s])
    eight = plan_generation(parts, cl, _costs(), sequences=8, token_slices="auto", **kw)
    assert len(eight.devices) > 1 and len(eight.slices) > 1 and sum(eight.slices) == 64
    assert eight.predicted_tokens_per_s > 1.5 * rates["capability", 1]
    tight = _load_cluster(TIGHT)
    p = plan_generation(parts, tight, _costs(), **kw)
    assert len(p.devices) > 1 and all(
        b <= m for b, m in zip(p.stage_bytes, p.mem_bytes, strict=True)
    )


def test_groups_and_decode_rate() -> None:
    assert group_sizes(8, 4) == [2, 2, 2, 2] and group_sizes(3, 4) == [1, 1, 1]
    assert group_sizes(5, 2) == [3, 2] and group_sizes(1, 1) == [1]
    # two groups of batch 2: tokens after both first tokens (t = 1.0) count, over 1.0 .. 2.0
    assert decode_rate([[0.5, 1.5, 2.0], [1.0, 1.6, 1.9]], [2, 2]) == pytest.approx(8 / 1.0)
    assert decode_rate([[0.5]], [1]) is None


def _coinfer(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COINFER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "coinfer", *args], capture_output=True, text=True, timeout=300,
        env=env, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coinfer-cache")


@pytest.mark.integration
def test_cli_json(cache: Path) -> None:
    res = _coinfer(
        "generate", f"{MODELS}:tiny_plain_gpt2", "--cluster", TESTBED, "--prompt", "héllo",
        "--max-new-tokens", "4", "--sequences", "3", "--algo", "even", "--token-slices", "auto",
        "--json", "--gantt", str(cache / "timeline.png"), cache=cache,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["tokenizer"] == "bytes"
    prompt = [b % 256 for b in "héllo".encode()]
    assert len(doc["tokens"]) == 3 and doc["reference_tokens"][: len(prompt)] == prompt
    assert all(t == doc["reference_tokens"] for t in doc["tokens"]) and doc["identical"]
    assert len(doc["reference_tokens"]) == len(prompt) + 4
    assert doc["ttft_s"] > 0 and doc["tokens_per_s"] > 0
    assert doc["predicted_ttft_s"] > 0 and doc["predicted_tokens_per_s"] > 0
    # the simulator replayed the same plan; the measured and simulated timelines were drawn
    sim = doc["simulated"]
    assert sim["ttft_s"] > 0 and sim["tokens_per_s"] > 0 and len(sim["kv_bytes_end"]) == 4
    assert sim["kv_bytes_end"] == [m["kv_cache_bytes"] for m in doc["memory"]]
    assert Path(doc["gantt"]).stat().st_size > 10_000
    # the runtime's per-item overhead was probed on these devices and cached for the next run
    assert doc["item_overhead_s"] >= 0 and list((cache / "llm").glob("overhead-*.json"))
    plan = doc["plan"]
    assert plan["algo"] == "even" and plan["devices"] == ["d0", "d1", "d2", "d3"]
    assert plan["layer_counts"] == [1, 1, 1, 1] and sum(plan["token_slices"]) == len(prompt)
    assert [m["device"] for m in doc["memory"]] == plan["devices"]
    for m in doc["memory"]:
        assert 0 < m["weights_bytes"] <= m["predicted_bytes"] <= m["capacity_bytes"]
        assert m["kv_cache_bytes"] > 0


BAD = [
    (["--max-new-tokens", "2"], "exactly one of --prompt"),
    (["--prompt", "a", "--prompt-ids", "1"], "exactly one of --prompt"),
    (["--prompt-ids", "1,x"], "comma-separated integers"),
    (["--prompt-ids", "1,999"], "ids in 0..255"),
    (["--prompt", "a", "--token-slices", "zero"], "--token-slices"),
    (["--prompt", "a", "--algo", "fast"], "unknown --algo"),
    (["--prompt", "a", "--devices", "d9"], "no device 'd9'"),
    (["--prompt", "a", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["--prompt", "a", "--max-new-tokens", "300"], "exceed the model's"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("args", "message"), BAD, ids=[m for _, m in BAD])
def test_cli_bad_input_is_one_line_exit_2(cache: Path, args: list[str], message: str) -> None:
    res = _coinfer("generate", f"{MODELS}:tiny_llama", *args, cache=cache)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr


@pytest.mark.integration
def test_too_large_for_one_device_runs_across_the_tight_cluster(cache: Path) -> None:
    res = _coinfer(
        "generate", "gpt2", "--cluster", TIGHT, "--prompt-ids", "464,2068,7586,21831",
        "--max-new-tokens", "3", "--devices", "d0", cache=cache,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "short by" in res.stderr
    res = _coinfer(
        "generate", "gpt2", "--cluster", TIGHT, "--prompt-ids", "464,2068,7586,21831",
        "--max-new-tokens", "3", "--json", "--no-calibrate", cache=cache,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["item_overhead_s"] == 0  # not measured: the profile alone
    assert doc["identical"] and len(doc["plan"]["devices"]) > 1
    for m in doc["memory"]:
        assert m["weights_bytes"] + m["kv_cache_bytes"] <= m["capacity_bytes"]
