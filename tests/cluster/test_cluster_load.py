"""Cluster files: examples load, units convert, each kind of bad input is one named line."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.cluster import (
    BandwidthTrace,
    cluster_from_dict,
    cluster_from_yaml,
    default_local_cluster,
    load_cluster,
    load_trace,
)
from coinfer.cluster.local import LOCAL_TESTBED_YAML
from coinfer.cluster.units import parse_memory
from coinfer.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))

BASE = {
    "name": "t",
    "source": "a",
    "devices": [
        {"name": "a", "speed": {"gflops": 10}, "memory": "1GiB"},
        {"name": "b", "speed": {"gflops": 5}, "memory": 1000},
    ],
    "links": [{"src": "a", "dst": "b", "bandwidth_mbps": 100, "latency_ms": 2}],
}


def _with(path: list, value, base=None) -> dict:
    """A deep copy of BASE with ``value`` set at ``path`` (``None`` value deletes the key)."""
    doc = yaml.safe_load(yaml.safe_dump(base or BASE))
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()


def test_expected_examples_exist():
    names = {p.name for p in EXAMPLE_FILES}
    assert {
        "pico_rpi.yaml",
        "phone_edge_cloud.yaml",
        "multihop_edge.yaml",
        "biglittle_soc.yaml",
        "office_llm.yaml",
        "local_testbed.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_loads_and_round_trips(path):
    cl = load_cluster(path)
    assert cl.source in cl.device_names
    assert len(cl.devices) >= 3
    again = cluster_from_dict(cl.to_dict(), origin="rt")
    assert again.device_names == cl.device_names
    assert again.devices == cl.devices
    for a, b in zip(again.links, cl.links, strict=True):
        assert (a.src, a.dst, a.trace) == (b.src, b.dst, b.trace)
        assert a.bandwidth_Bps == pytest.approx(b.bandwidth_Bps)
        assert a.latency_s == pytest.approx(b.latency_s)


def test_units_are_converted():
    cl = cluster_from_dict(BASE)
    a = cl.device("a")
    assert a.mem_bytes == 1024**3
    assert cl.device("b").mem_bytes == 1000
    ab = cl.link("a", "b")
    assert ab is not None and cl.link("b", "a") is not None  # bidirectional by default
    assert ab.bandwidth_Bps == pytest.approx(100e6 / 8)
    assert ab.latency_s == pytest.approx(0.002)
    assert ab.transfer_s(12_500_000) == pytest.approx(1.002)


def test_one_way_link_and_dvfs_in_ghz():
    doc = _with(["links", 0, "bidirectional"], False)
    doc["links"].append({"src": "b", "dst": "a", "bandwidth_mbps": 10, "bidirectional": False})
    doc["devices"][0]["dvfs_ghz"] = [1.5, 0.6, 1.0]
    cl = cluster_from_dict(doc)
    assert cl.link("b", "a").bandwidth_Bps == pytest.approx(10e6 / 8)
    assert cl.device("a").dvfs_levels == (0.4, pytest.approx(2 / 3, abs=1e-6), 1.0)


def test_local_testbed_matches_embedded_default():
    cl = default_local_cluster()
    assert load_cluster(EXAMPLES / "local_testbed.yaml") == cl
    assert LOCAL_TESTBED_YAML in (EXAMPLES / "local_testbed.yaml").read_text()
    quotas = sorted(d.emulate.cpu_quota for d in cl.devices)
    assert quotas == [0.2, 0.3, 0.4, 0.6]
    assert all(d.emulate.threads == 1 for d in cl.devices)
    for lk in cl.links:
        assert 100e6 / 8 <= lk.bandwidth_Bps <= 1000e6 / 8
        assert 0.001 <= lk.latency_s <= 0.002


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (
            ["devices", 0, "speed"],
            _DELETE,
            r"^x\.yaml: devices\[0\]\.speed: missing required field$",
        ),
        (
            ["devices", 1, "colour"],
            "red",
            r"^x\.yaml: devices\[1\]\.colour: unknown field \(got 'red'\)$",
        ),
        (
            ["devices", 1, "speed", "gflops"],
            -3,
            r"^x\.yaml: devices\[1\]\.speed\.gflops: must be > 0 \(got -3\)$",
        ),
        (
            ["links", 0, "latency_ms"],
            -1,
            r"^x\.yaml: links\[0\]\.latency_ms: must be >= 0 \(got -1\)$",
        ),
        (["devices", 0, "memory"], "-4GiB", r"^x\.yaml: devices\[0\]\.memory: .*positive.*'-4GiB'"),
        (
            ["devices", 0, "memory"],
            "4 parsecs",
            r"^x\.yaml: devices\[0\]\.memory: unknown size unit 'parsecs'",
        ),
        (
            ["devices", 0, "speed"],
            {},
            r"^x\.yaml: devices\[0\]\.speed: give at least one of 'gflops'",
        ),
        (["devices", 0, "kind"], "fpga", r"^x\.yaml: devices\[0\]\.kind: .*'fpga'"),
        (
            ["devices", 0, "dvfs_levels"],
            [0.5, 1.5],
            r"^x\.yaml: devices\[0\]\.dvfs_levels: .*fractions in \(0, 1\]",
        ),
        (
            ["devices", 0, "dvfs_levels"],
            [0.5, 0.8],
            r"^x\.yaml: devices\[0\]\.dvfs_levels: the highest level must be 1\.0",
        ),
        (
            ["devices", 1, "name"],
            "a",
            r"^x\.yaml: devices\[1\]\.name: duplicate device name \(got 'a'\)$",
        ),
        (["devices", 1, "name"], "bad name", r"^x\.yaml: devices\[1\]\.name: .*'bad name'"),
        (["source"], "zz", r"^x\.yaml: source: not a device \(got 'zz'; devices: a, b\)$"),
        (
            ["links", 0, "dst"],
            "ghost",
            r"^x\.yaml: links\[0\]\.dst: unknown device \(got 'ghost'; devices: a, b\)$",
        ),
        (["links", 0, "dst"], "a", r"^x\.yaml: links\[0\]: a link needs two different devices"),
        (
            ["links", 0, "bandwidth_mbps"],
            _DELETE,
            r"^x\.yaml: links\[0\]\.bandwidth_mbps: missing required field \(or give a 'trace'\)$",
        ),
        (
            ["links"],
            [],
            r"^x\.yaml: links: network is disconnected: device 'b' cannot be reached from source 'a'$",
        ),
        (
            ["devices", 0, "emulate"],
            {"cpu_quota": 0},
            r"^x\.yaml: devices\[0\]\.emulate\.cpu_quota: must be > 0 \(got 0\)$",
        ),
        (["name"], _DELETE, r"^x\.yaml: name: missing required field$"),
    ],
)
def test_each_error_is_one_named_line(path, value, match):
    with pytest.raises(InputError, match=match) as info:
        cluster_from_dict(_with(path, value), origin="x.yaml")
    assert "\n" not in str(info.value)


def test_one_way_network_that_cannot_return_is_disconnected():
    doc = _with(["links", 0, "bidirectional"], False)
    with pytest.raises(InputError, match=r"device 'b' cannot send back to source 'a'"):
        cluster_from_dict(doc, origin="x.yaml")


def test_duplicate_direction_is_rejected():
    doc = _with(["links"], [*BASE["links"], {"src": "b", "dst": "a", "bandwidth_mbps": 5}])
    with pytest.raises(InputError, match=r"links\[1\]: duplicate link b->a \(also links\[0\]\)"):
        cluster_from_dict(doc, origin="x.yaml")


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing\.yaml: cannot read cluster file"):
        load_cluster(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match=r"bad\.yaml: not valid YAML \(line \d+"):
        load_cluster(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match=r"bad\.yaml: a cluster file must hold a mapping"):
        load_cluster(bad)
    bad.write_text("")
    with pytest.raises(InputError, match=r"bad\.yaml: the file is empty"):
        load_cluster(bad)
    with pytest.raises(InputError, match=r"devices\[0\]\.speed\.profile: file not found"):
        cluster_from_dict(
            _with(["devices", 0, "speed"], {"profile": "nope.json"}),
            origin="x.yaml",
            base_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time_s,bandwidth_mbps\n0,10\n5,abc\n", r"t\.csv line 3: not a number"),
        ("0,10\n5,-1\n", r"t\.csv line 2: bandwidth must be > 0"),
        ("0,10\n5,20\n5,30\n", r"t\.csv line 3: time 5\.0 is not after 5\.0"),
        ("0,10,3\n", r"t\.csv line 1: expected 2 columns"),
        ("time_s,bandwidth_mbps\n", r"t\.csv: trace has no samples"),
    ],
)
def test_bad_trace_csv(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    doc = _with(["links", 0, "trace"], "t.csv")
    with pytest.raises(InputError, match=r"^x\.yaml: links\[0\]\.trace: " + match):
        cluster_from_dict(doc, origin="x.yaml", base_dir=tmp_path)


def test_trace_lookup_mean_and_default_bandwidth(tmp_path):
    (tmp_path / "t.csv").write_text("# comment\ntime_s,bandwidth_mbps\n0,8\n10,16\n20,8\n")
    doc = _with(["links", 0, "bandwidth_mbps"], _DELETE)
    doc["links"][0]["trace"] = "t.csv"
    cl = cluster_from_dict(doc, base_dir=tmp_path)
    tr = cl.trace(cl.link("a", "b"))
    assert cl.trace(("b", "a")) is tr
    assert tr.at(-1) == tr.at(0) == pytest.approx(1e6)
    assert tr.at(15) == pytest.approx(2e6)
    assert tr.at(1e9) == pytest.approx(1e6)
    assert tr.mean_Bps() == pytest.approx(1.5e6)
    assert cl.link("a", "b").bandwidth_Bps == pytest.approx(1.5e6)  # nominal = trace mean
    # 1e6 B/s for 10 s, then 2e6 B/s: 14e6 bytes from t=0 finish at 10 + 4e6/2e6 = 12 s
    assert tr.finish_s(0.0, 14e6) == pytest.approx(12.0)
    assert load_trace(tmp_path / "t.csv") == tr


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.1, 1000), min_size=1, max_size=8),
    st.floats(0, 30),
    st.floats(0, 1e8),
)
def test_trace_finish_time_delivers_exactly_the_bytes(bws, start, nbytes):
    times = tuple(float(5 * i) for i in range(len(bws)))
    tr = BandwidthTrace(times, tuple(b * 1e5 for b in bws))
    end = tr.finish_s(start, nbytes)
    assert end >= start
    # integrate the piecewise-constant rate from start to end: must equal nbytes
    grid = sorted({start, end, *[t for t in times if start < t < end]})
    sent = sum(tr.at(a) * (b - a) for a, b in itertools.pairwise(grid))
    assert sent == pytest.approx(nbytes, rel=1e-9, abs=1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GiB", 4 * 1024**3), ("512 MB", 512_000_000), ("1.5e3", 1500), (2048, 2048), ("1kib", 1024)],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1", "0", True, "1 XB"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError):
        parse_memory(text)


def test_device_lookup_error_lists_names():
    cl = default_local_cluster()
    with pytest.raises(InputError, match=r"no device 'd9' \(devices: d0, d1, d2, d3\)"):
        cl.device("d9")


def test_yaml_text_api_and_token():
    cl = cluster_from_yaml(yaml.safe_dump({**BASE, "token": "s3cret"}), origin="mem")
    assert cl.token == "s3cret"
    assert math.isclose(cl.link("b", "a").latency_s, 0.002)


def test_importing_cluster_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, coinfer.cluster, coinfer.profile; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 5),
    gflops=st.lists(st.floats(0.1, 1e4), min_size=5, max_size=5),
    mem=st.lists(st.integers(1, 2**40), min_size=5, max_size=5),
    bw=st.floats(0.01, 1e5),
    lat=st.floats(0, 100),
    levels=st.lists(st.floats(0.05, 1.0), min_size=0, max_size=3),
)
def test_random_clusters_round_trip(n, gflops, mem, bw, lat, levels):
    names = ["a", "b", "c", "d", "e"][:n]
    doc = {
        "name": "rand",
        "source": names[0],
        "devices": [
            {
                "name": m,
                "speed": {"gflops": gflops[i]},
                "memory": mem[i],
                "dvfs_levels": [*levels, 1.0],
            }
            for i, m in enumerate(names)
        ],
        # a chain a-b-c-...: connected, not complete
        "links": [
            {"src": u, "dst": v, "bandwidth_mbps": bw, "latency_ms": lat}
            for u, v in itertools.pairwise(names)
        ],
    }
    cl = cluster_from_dict(doc)
    assert len(cl.links) == 2 * (n - 1)
    back = cluster_from_dict(cl.to_dict())
    assert back.devices == cl.devices
    for a, b in zip(back.links, cl.links, strict=True):
        assert (a.src, a.dst) == (b.src, b.dst)
        assert a.bandwidth_Bps == pytest.approx(b.bandwidth_Bps)
        assert a.latency_s == pytest.approx(b.latency_s, abs=1e-12)
