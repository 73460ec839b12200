"""Malformed inputs for the fuzz tests and the fuzz benchmark: valid documents, then mutated.

Every loader must answer any of these with a valid object or one :class:`InputError` — never
another exception (a traceback for the user), never a hang. The mutations are what a careless
or hostile file does: drop a field, change a value's type, put NaN/inf/negative/huge numbers,
unknown names, deep nesting, non-UTF-8 bytes, or replace a whole branch with junk.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import strategies as st

CLUSTER: dict[str, Any] = {
    "name": "fuzz",
    "source": "a",
    "token": "x" * 40,
    "devices": [
        {"name": "a", "kind": "cpu", "speed": {"gflops": 5.0}, "memory": "1GiB",
         "power": {"idle": 1.0, "active": 3.0, "transmit": 0.5}, "dvfs_levels": [0.5, 1.0]},
        {"name": "b", "speed": {"gflops": 9.0, "scale": 1.2}, "memory": 2000000000,
         "emulate": {"cpu_quota": 0.5, "threads": 1}},
        {"name": "c", "speed": {"predict": {"cores": 2, "freq_ghz": 1.5}}, "memory": "512MiB",
         "dvfs_ghz": [0.6, 1.2]},
    ],
    "links": [{"src": "a", "dst": "b", "bandwidth_mbps": 100, "latency_ms": 2}],
    "media": [{"name": "wifi", "members": ["a", "b", "c"], "bandwidth_mbps": 40, "latency_ms": 3}],
}  # fmt: skip

INSTANCE: dict[str, Any] = {
    "name": "fuzz",
    "pieces": [
        {"name": "p0", "time": {"a": 0.01, "b": 0.02}, "mem": 1000, "out_bytes": 5000},
        {"name": "p1", "time": {"a": 0.03, "b": 0.01}, "mem": 2000, "out_bytes": 100},
    ],
    "input_bytes": 6000,
    "devices": [{"name": "a", "mem": 10**9, "power_active": 3.0}, {"name": "b", "mem": 10**9}],
    "links": [{"src": "a", "dst": "b", "bandwidth": 1e6, "latency": 0.001}],
    "media": [{"name": "air", "members": ["a", "b"], "bandwidth": 1e6, "latency": 0.002}],
    "source": "a",
}

PLAN: dict[str, Any] = {
    "algo": "manual",
    "objective": "throughput",
    "stages": [{"pieces": [0, 0], "devices": ["a"]}, {"pieces": [1, 1], "devices": ["b"]}],
    "predicted": {"latency_s": 0.1, "period_s": 0.05, "throughput_rps": 20.0},
    "planning_time_s": 0.0,
}

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -0.0, 1e308, 2**63, "", "a", "zz"]),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just([[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], max_mutations: int = 3) -> Any:
    """``base`` with 1..``max_mutations`` random edits: replace a value, delete a key or list
    item, add an unknown key, or duplicate a list item."""
    doc: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if not path:
            if op == "replace":
                doc = copy.deepcopy(draw(JUNK))
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "replace":
            parent[last] = copy.deepcopy(draw(JUNK))
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.text(min_size=1, max_size=6))] = copy.deepcopy(draw(JUNK))
        elif op == "duplicate" and isinstance(parent[last], list) and parent[last]:
            parent[last].append(copy.deepcopy(parent[last][0]))
    return doc
