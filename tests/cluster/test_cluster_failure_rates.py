"""Failure rates in cluster files and instance JSON: optional, default 0, validated, carried
through to the Instance, round-tripped; old files load unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coinfer.cluster import cluster_from_dict, load_cluster
from coinfer.core.instance import Device, Link, instance_from_dict, make_instance, surviving
from coinfer.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"

BASE = {
    "name": "t",
    "source": "a",
    "devices": [
        {"name": "a", "speed": {"gflops": 10}, "memory": "1GiB"},
        {"name": "b", "speed": {"gflops": 5}, "memory": 1000, "failure_rate_per_h": 2.5},
    ],
    "links": [
        {"src": "a", "dst": "b", "bandwidth_mbps": 100, "latency_ms": 2, "failure_rate_per_h": 0.5}
    ],
}


def _doc(**changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    for where, value in changes.items():
        kind, i, field = where.split("__")
        doc[kind][int(i)][field] = value
    return doc


def test_rates_load_and_default_to_zero() -> None:
    c = cluster_from_dict(_doc(), origin="t.yaml")
    assert c.device("a").failure_rate_per_h == 0.0
    assert c.device("b").failure_rate_per_h == 2.5
    # a bidirectional entry gives both directions its rate
    assert {lk.pair: lk.failure_rate_per_h for lk in c.links} == {("a", "b"): 0.5, ("b", "a"): 0.5}


def test_rates_round_trip_through_the_yaml_form() -> None:
    c = cluster_from_dict(_doc(), origin="t.yaml")
    again = cluster_from_dict(c.to_dict(), origin="again")
    assert again == c
    # a reliable part writes no field, so old files stay byte-for-byte what they were
    assert "failure_rate_per_h" not in c.to_dict()["devices"][0]


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("devices__1__failure_rate_per_h", -1, r"devices\[1\]\.failure_rate_per_h: must be >= 0"),
        ("devices__0__failure_rate_per_h", "often", r"devices\[0\]\.failure_rate_per_h: .*number"),
        (
            "devices__1__failure_rate_per_h",
            float("inf"),
            r"devices\[1\]\.failure_rate_per_h: .*finite",
        ),
        ("links__0__failure_rate_per_h", -0.1, r"links\[0\]\.failure_rate_per_h: must be >= 0"),
        ("links__0__failure_rate_per_h", float("nan"), r"links\[0\]\.failure_rate_per_h: .*finite"),
        ("devices__1__mtbf_h", 3, r"devices\[1\]\.mtbf_h: unknown field"),
    ],
)
def test_bad_rates_are_one_line_naming_the_field(where, value, message) -> None:
    with pytest.raises(InputError, match=r"^t\.yaml: " + message) as err:
        cluster_from_dict(_doc(**{where: value}), origin="t.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_load_reliable(path: Path) -> None:
    c = load_cluster(path)
    assert all(d.failure_rate_per_h == 0.0 for d in c.devices)
    assert all(lk.failure_rate_per_h == 0.0 for lk in c.links)


def test_cost_model_carries_rates_into_the_instance() -> None:
    # the bridge `coinfer plan --cluster` uses to build the instance's devices
    from coinfer.profile.costmodel import cluster_to_instance_devices

    c = cluster_from_dict(_doc(), origin="t.yaml")
    devs = {d.name: d.failure_rate_per_h for d in cluster_to_instance_devices(c)}
    assert devs == {"a": 0.0, "b": 2.5}


# ----- instance JSON ---------------------------------------------------------------------------


def _instance(**rates):
    devs = [Device("a", 10**9), Device("b", 10**9, failure_rate_per_h=rates.get("b", 0.0))]
    links = [Link("a", "b", 1e6, 0.001), Link("b", "a", 1e6, 0.001)]
    times = [{"a": 0.01, "b": 0.02}] * 2
    return make_instance(times, [10, 10], [100, 100], 100, devs, links, "a")


def test_instance_json_round_trips_rates() -> None:
    inst = _instance(b=3.0)
    inst = type(inst)(
        inst.pieces, inst.input_bytes, inst.devices, inst.links, inst.source,
        link_failure_per_h={("a", "b"): 0.25},
    )  # fmt: skip
    d = json.loads(inst.to_json())
    assert d["devices"][1]["failure_rate_per_h"] == 3.0
    assert "failure_rate_per_h" not in d["devices"][0]
    assert d["links"][0]["failure_rate_per_h"] == 0.25
    assert "failure_rate_per_h" not in d["links"][1]
    back = instance_from_dict(d)
    assert back.device_by_name["b"].failure_rate_per_h == 3.0
    assert back.link_failure_rate_per_h("a", "b") == 0.25
    assert back.link_failure_rate_per_h("b", "a") == 0.0
    assert back.has_failure_rates and not _instance().has_failure_rates


def test_old_instance_json_loads_reliable() -> None:
    d = json.loads(_instance().to_json())
    assert "failure_rate_per_h" not in json.dumps(d)
    back = instance_from_dict(d)
    assert not back.has_failure_rates and back == _instance()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["devices"][1].update(failure_rate_per_h=-2), "devices.1.failure_rate_per_h"),
        (lambda d: d["links"][0].update(failure_rate_per_h="x"), "links.0.failure_rate_per_h"),
        (
            lambda d: d["links"][0].update(failure_rate_per_h=float("inf")),
            "links.0.failure_rate_per_h",
        ),
    ],
)
def test_bad_instance_rates_are_one_line(mutate, message) -> None:
    d = json.loads(_instance().to_json())
    mutate(d)
    with pytest.raises(InputError, match=r"^inst\.json: field '" + message.replace(".", r"\.")):
        instance_from_dict(d, origin="inst.json")


def test_instance_rejects_rates_on_missing_links_and_bad_values() -> None:
    inst = _instance()
    with pytest.raises(InputError, match="a->c, which is not a dedicated link"):
        type(inst)(inst.pieces, inst.input_bytes, inst.devices, inst.links, inst.source,
                   link_failure_per_h={("a", "c"): 1.0})  # fmt: skip
    with pytest.raises(InputError, match="device 'b' failure_rate_per_h must be finite and >= 0"):
        _instance(b=-1.0)


def test_surviving_keeps_the_rates_of_what_survives() -> None:
    base = _instance(b=1.0)
    inst = type(base)(base.pieces, base.input_bytes, base.devices, base.links, base.source,
                      link_failure_per_h={("a", "b"): 0.5})  # fmt: skip
    assert surviving(inst, ["a", "b"]).link_failure_per_h == {("a", "b"): 0.5}
    assert surviving(inst, ["a"]).link_failure_per_h == {}
