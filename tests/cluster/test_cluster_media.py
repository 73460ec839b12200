"""Shared media in cluster files: parsing, validation errors, the hops they provide, and the
instance a model + cluster with media reduces to (JSON round trip included)."""

from __future__ import annotations

import copy

import pytest

from coinfer.cluster import cluster_from_dict
from coinfer.core.evaluate import busy_times
from coinfer.core.instance import Instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.profile.costmodel import build_instance

BASE = {
    "name": "wifi-and-wire",
    "source": "a",
    "devices": [
        {"name": n, "speed": {"gflops": g}, "memory": "4GiB"}
        for n, g in (("a", 5), ("b", 10), ("c", 20))
    ],
    "links": [{"src": "a", "dst": "c", "bandwidth_mbps": 1000, "latency_ms": 0.1}],
    "media": [{"name": "wifi", "members": ["a", "b", "c"], "bandwidth_mbps": 80, "latency_ms": 3}],
}


def test_media_provide_every_member_pair_without_a_dedicated_link() -> None:
    cl = cluster_from_dict(BASE)
    assert [m.name for m in cl.media] == ["wifi"]
    hops = {lk.pair: lk.medium for lk in cl.all_links}
    assert hops[("a", "c")] is None and hops[("c", "a")] is None  # wired both ways
    assert {p for p, m in hops.items() if m == "wifi"} == {
        ("a", "b"),
        ("b", "a"),
        ("b", "c"),
        ("c", "b"),
    }
    assert cl.link("a", "b").bandwidth_Bps == pytest.approx(10e6)
    again = cluster_from_dict(cl.to_dict())
    assert again.media == cl.media and again.links == cl.links


def test_a_medium_alone_connects_a_cluster() -> None:
    data = copy.deepcopy(BASE)
    data["links"] = []
    assert len(cluster_from_dict(data).all_links) == 6
    data["media"][0]["members"] = ["a", "b"]
    with pytest.raises(InputError, match="disconnected: device 'c'"):
        cluster_from_dict(data)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"members": ["a", "zz"]}, r"media\[0\]\.members\[1\]: unknown device \(got 'zz'"),
        ({"members": ["a"]}, r"media\[0\]\.members: needs two or more distinct devices"),
        ({"members": ["a", "a", "b"]}, r"needs two or more distinct devices"),
        ({"bandwidth_mbps": None}, r"media\[0\]\.bandwidth_mbps: missing required field"),
        ({"bandwidth_mbps": -3}, r"media\[0\]\.bandwidth_mbps"),
        ({"colour": "blue"}, r"media\[0\]\.colour"),
    ],
)
def test_bad_media_get_one_line_naming_the_field(patch: dict, message: str) -> None:
    data = copy.deepcopy(BASE)
    data["media"][0].update(patch)
    data["media"][0] = {k: v for k, v in data["media"][0].items() if v is not None}
    with pytest.raises(InputError, match=message) as err:
        cluster_from_dict(data, origin="c.yaml")
    assert str(err.value).startswith("c.yaml: ") and "\n" not in str(err.value)


def test_two_media_may_not_share_a_pair_and_names_are_unique() -> None:
    data = copy.deepcopy(BASE)
    data["media"].append({"name": "bt", "members": ["b", "c"], "bandwidth_mbps": 2})
    with pytest.raises(InputError, match=r"'b' and 'c' already share medium 'wifi'"):
        cluster_from_dict(data)
    data["media"][1] = {"name": "wifi", "members": ["a", "b"], "bandwidth_mbps": 2}
    with pytest.raises(InputError, match=r"media\[1\]\.name: duplicate medium name"):
        cluster_from_dict(data)


def test_a_medium_trace_sets_its_nominal_rate(tmp_path) -> None:
    (tmp_path / "air.csv").write_text("time_s,bandwidth_mbps\n0,40\n1,120\n2,120\n")
    data = copy.deepcopy(BASE)
    del data["media"][0]["bandwidth_mbps"]
    data["media"][0]["trace"] = "air.csv"
    cl = cluster_from_dict(data, base_dir=tmp_path)
    assert cl.media[0].bandwidth_Bps == pytest.approx(10e6)  # time-weighted mean of 40 and 120
    assert cl.trace(cl.link("a", "b")) is cl.traces["wifi"]


def test_the_instance_carries_the_media_and_charges_them_once(tmp_path) -> None:
    inst = build_instance("tiny_cnn", cluster_from_dict(BASE), source="analytic", max_pieces=3)
    assert [m.name for m in inst.media] == ["wifi"] and len(inst.dedicated_links) == 2
    stages = (Stage(0, 0, ("a",)), Stage(1, 1, ("b",)), Stage(2, inst.num_pieces - 1, ("c",)))
    _, busy = busy_times(inst, stages)
    hops = [("a", "b", inst.cut_bytes(1)), ("b", "c", inst.cut_bytes(2))]
    assert busy["wifi"] == pytest.approx(sum(inst.transfer_s(u, v, x) for u, v, x in hops))
    assert ("a", "b") not in busy  # a hop over the air is charged to the air only
    inst.save(tmp_path / "i.json")
    back = Instance.load(tmp_path / "i.json")
    assert back == inst and back.media == inst.media
