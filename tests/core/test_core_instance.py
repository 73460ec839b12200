"""The instance file format and the reference cost model, checked on hand-computed cases."""

from __future__ import annotations

import json
import math

import pytest

from coinfer.core.evaluate import (
    check_plan,
    energy_j,
    evaluate,
    latency_s,
    memory_bound_check,
    period_s,
    replica_weights,
    validate_stages,
)
from coinfer.core.instance import Device, Instance, Link, load_instance, make_instance
from coinfer.core.plans import Metrics, Plan, Stage, stages_from_cuts
from coinfer.errors import InfeasibleError, InputError

MB = 1_000_000


def line3() -> Instance:
    """a - b - c in a line (no a<->c link): transfers a->c go through b."""
    devs = (
        Device("a", 10**9, power_active_w=2.0, power_transmit_w=1.0),
        Device("b", 10**9, power_active_w=5.0, power_transmit_w=1.0),
        Device("c", 10**9, power_active_w=10.0, power_transmit_w=1.0, dvfs_levels=(0.5, 1.0)),
    )
    links = []
    for u, v in (("a", "b"), ("b", "c")):
        links += [Link(u, v, 1e6, 0.001), Link(v, u, 1e6, 0.001)]
    times = [{"a": 0.010, "b": 0.005, "c": 0.002}] * 4
    return make_instance(times, [100] * 4, [1000, 2000, 3000, 100], 500, devs, links, "a")


def test_multi_hop_path_is_store_and_forward() -> None:
    inst = line3()
    path = inst.path("a", "c", 1000)
    assert [(lk.src, lk.dst) for lk in path] == [("a", "b"), ("b", "c")]
    assert inst.transfer_s("a", "c", 1000) == pytest.approx(2 * (0.001 + 1000 / 1e6))
    assert inst.transfer_s("b", "b", 10**9) == 0.0


def test_cheapest_path_depends_on_size() -> None:
    # direct a->c is low-latency but slow; a->b->c is fast but has two latencies
    devs = tuple(Device(n, 1) for n in "abc")
    links = (Link("a", "c", 1e5, 0.0001), Link("a", "b", 1e8, 0.01), Link("b", "c", 1e8, 0.01))
    inst = make_instance([{"a": 1, "b": 1, "c": 1}], [0], [1], 1, devs, links, "a")
    assert len(inst.path("a", "c", 10)) == 1  # small message: direct
    assert len(inst.path("a", "c", 10**7)) == 2  # big message: two fast hops


def test_latency_and_period_hand_computed() -> None:
    inst = line3()
    stages = stages_from_cuts([1], ["a", "c"], 4)
    # a computes 0..1 (0.02), 2000 B a->b->c (2 x 0.003), c computes 2..3 (0.004),
    # 100 B back c->b->a (2 x 0.0011); input stays on a.
    assert latency_s(inst, stages) == pytest.approx(0.02 + 0.006 + 0.004 + 0.0022, rel=1e-12)
    # busiest resource: device a (0.02 s per request)
    assert period_s(inst, stages) == pytest.approx(0.02, rel=1e-12)


def test_replicas_share_by_speed_and_take_cheapest_route() -> None:
    inst = line3()
    st = Stage(0, 3, ("b", "c"))
    w = replica_weights(inst, st)
    assert w == pytest.approx((0.002 / 0.007, 0.005 / 0.007))
    # b takes 4 x 5 ms = 0.02 s, c 4 x 2 ms = 0.008 s: shares 2/7 and 5/7, and each replica is
    # busy 1 / (1/0.02 + 1/0.008) = 1/175 s per request. The busiest link is a->b, which every
    # input crosses (directly to b, or relayed on to c): (1 ms + 500 B / 1 MB/s) = 1.5 ms;
    # b->a carries every output (1 ms + 100 B / 1 MB/s = 1.1 ms). So the devices bound it.
    assert period_s(inst, (st,)) == pytest.approx(1 / 175, rel=1e-12)
    # one request takes the cheaper of the two replicas end to end
    via_b = (0.001 + 500 / 1e6) + 0.02 + (0.001 + 100 / 1e6)
    via_c = 2 * (0.001 + 500 / 1e6) + 0.008 + 2 * (0.001 + 100 / 1e6)
    assert latency_s(inst, (st,)) == pytest.approx(min(via_b, via_c), rel=1e-12)


def test_energy_counts_compute_and_radio() -> None:
    inst = line3()
    stages = (Stage(0, 3, ("c",), freqs=(0.5,)),)
    # c at half speed: 0.016 s at power 10 * 0.5**3 (idle unknown -> 0)
    compute = 0.016 * 10 * 0.125
    radio = 2 * (0.001 + 500 / 1e6) * 1.0 + 2 * (0.001 + 100 / 1e6) * 1.0
    assert energy_j(inst, stages) == pytest.approx(compute + radio, rel=1e-12)


def test_energy_is_none_without_power() -> None:
    devs = (Device("a", 10), Device("b", 10))
    inst = make_instance([{"a": 1.0, "b": 1.0}], [1], [1], 1, devs, (Link("a", "b", 1, 0),), "a")
    assert energy_j(inst, (Stage(0, 0, ("a",)),)) is None


def test_validate_rejects_bad_plans() -> None:
    inst = line3()
    with pytest.raises(InputError, match="must start at piece 1"):
        validate_stages(inst, (Stage(0, 0, ("a",)), Stage(2, 3, ("b",))))
    with pytest.raises(InputError, match="serves stages 0 and 1"):
        validate_stages(inst, (Stage(0, 1, ("a",)), Stage(2, 3, ("a",))))
    with pytest.raises(InputError, match="unknown device 'z'"):
        validate_stages(inst, (Stage(0, 3, ("z",)),))
    with pytest.raises(InputError, match="instance has 4"):
        validate_stages(inst, (Stage(0, 2, ("a",)),))
    with pytest.raises(InputError, match=r"no DVFS level 0\.3"):
        validate_stages(inst, (Stage(0, 3, ("c",), freqs=(0.3,)),))


def test_memory_infeasibility_names_device_and_shortfall() -> None:
    devs = (Device("big", 1000), Device("small", 150))
    links = (Link("big", "small", 1e6, 0), Link("small", "big", 1e6, 0))
    inst = make_instance([{"big": 1, "small": 1}] * 2, [100, 100], [1, 1], 1, devs, links, "big")
    with pytest.raises(InfeasibleError, match=r"'small' needs 200 bytes .* \(50 bytes short\)"):
        validate_stages(inst, (Stage(0, 1, ("small",)),))
    tiny = make_instance([{"big": 1, "small": 1}], [5000], [1], 1, devs, links, "big")
    with pytest.raises(InfeasibleError, match="largest device 'big'"):
        memory_bound_check(tiny)


def test_instance_json_round_trip(tmp_path) -> None:
    inst = line3()
    path = tmp_path / "i.json"
    inst.save(path)
    again = load_instance(path)
    assert again.to_dict() == inst.to_dict()
    assert evaluate(again, stages_from_cuts([0], ["b", "c"], 4)) == evaluate(
        inst, stages_from_cuts([0], ["b", "c"], 4)
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("source"), "field 'source': Field required"),
        (
            lambda d: d["links"].append({"src": "a", "dst": "zz", "bandwidth": 1, "latency": 0}),
            "unknown device 'zz'",
        ),
        (lambda d: d["links"][0].update(bandwidth=-5), r"field 'links.0.bandwidth'"),
        (lambda d: d["pieces"][0]["time"].pop("b"), r"no time for devices \['b'\]"),
        (lambda d: d.update(colour="red"), "field 'colour': Extra inputs are not permitted"),
        (lambda d: d.update(source="q"), "'source' = 'q' is not a device"),
    ],
)
def test_bad_instance_files_get_one_line(tmp_path, mutate, message) -> None:
    data = line3().to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as info:
        load_instance(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_and_non_json_files(tmp_path) -> None:
    with pytest.raises(InputError, match="cannot read instance file"):
        load_instance(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_instance(bad)


def test_plan_json_round_trip_and_check() -> None:
    inst = line3()
    stages = (Stage(0, 1, ("a",)), Stage(2, 3, ("b", "c"), freqs=(1.0, 0.5)))
    plan = Plan(
        "manual", "throughput", stages, evaluate(inst, stages), 0.01, seed=3, details={"x": [1, 2]}
    )
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan
    assert again.cuts == (1,)
    assert check_plan(inst, again) == evaluate(inst, stages)
    wrong = Plan("manual", "throughput", stages, Metrics(1.0, 1.0), 0.0)
    with pytest.raises(InputError, match="reference model gives"):
        check_plan(inst, wrong)
    assert "[0-1]->a | [2-3]->b+c@0.5" in str(plan)


def test_metrics_throughput_is_inverse_period() -> None:
    m = Metrics(0.5, 0.25)
    assert m.throughput_rps == 4.0
    assert m.value("throughput") == 0.25
    assert math.isinf(Metrics(1, 1).value("energy"))


# ----- shared media in the instance ----------------------------------------------------------


def _media_dict(media):
    return {
        "pieces": [
            {"name": "p0", "time": {"a": 0.01, "b": 0.02, "c": 0.03}, "mem": 1, "out_bytes": 10}
        ],
        "input_bytes": 100,
        "devices": [{"name": n, "mem": 10**9} for n in "abc"],
        "links": [{"src": "a", "dst": "b", "bandwidth": 1e8, "latency": 0.0}],
        "media": media,
        "source": "a",
    }


def test_media_round_trip_and_expand_to_every_uncovered_pair():

    inst = Instance.from_dict(
        _media_dict(
            [{"name": "air", "members": ["a", "b", "c"], "bandwidth": 1e6, "latency": 0.001}]
        )
    )
    hops = {(lk.src, lk.dst): lk.medium for lk in inst.links}
    assert hops.pop(("a", "b")) is None  # the dedicated link wins its direction
    assert set(hops.values()) == {"air"} and len(hops) == 5
    assert Instance.from_dict(inst.to_dict()) == inst
    assert inst.to_dict()["links"] == [{"src": "a", "dst": "b", "bandwidth": 1e8, "latency": 0.0}]


@pytest.mark.parametrize(
    ("media", "message"),
    [
        (
            [{"name": "air", "members": ["a", "zz"], "bandwidth": 1e6, "latency": 0}],
            "unknown device 'zz'",
        ),
        (
            [{"name": "air", "members": ["a"], "bandwidth": 1e6, "latency": 0}],
            "at least two distinct",
        ),
        (
            [
                {"name": "air", "members": ["a", "b"], "bandwidth": 1e6, "latency": 0},
                {"name": "air", "members": ["b", "c"], "bandwidth": 1e6, "latency": 0},
            ],
            "repeats the name 'air'",
        ),
        (
            [
                {"name": "air", "members": ["a", "b", "c"], "bandwidth": 1e6, "latency": 0},
                {"name": "bt", "members": ["b", "c"], "bandwidth": 1e6, "latency": 0},
            ],
            "share both medium 'air' and 'bt'",
        ),
        (
            [{"name": "air", "members": ["a", "b"], "bandwidth": 0, "latency": 0}],
            "media.0.bandwidth",
        ),
    ],
)
def test_bad_media_are_one_line_errors(media, message):

    with pytest.raises(InputError, match=message) as err:
        Instance.from_dict(_media_dict(media), origin="i.json")
    assert "\n" not in str(err.value) and str(err.value).startswith("i.json")
