"""Core groups of SoCs in the planning instance: the overlap rule, the families searched over,
and the restricted instances (coinfer.core.cores)."""

from __future__ import annotations

import pytest

from coinfer.core.cores import (
    UNREACHABLE_FACTOR,
    core_conflict,
    core_families,
    family_instance,
    has_core_groups,
)
from coinfer.core.evaluate import validate_stages
from coinfer.core.instance import Device, Instance, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError


def soc_instance(big: int = 2, little: int = 4, source: str = "s.big0") -> Instance:
    """A SoC of ``big`` + ``little`` cores as core groups (intervals), plus a plain host ``h``."""
    devs = [Device("h", 1 << 30)]
    for t, n in (("big", big), ("little", little)):
        for k in range(1, n + 1):
            for first in range(n - k + 1):
                cores = tuple(f"s.{t}{c}" for c in range(first, first + k))
                name = f"s.{t}{first}" if k == 1 else f"s.{t}{first}-{first + k - 1}"
                devs.append(Device(name, 1 << 28, cores=cores))
    names = [d.name for d in devs]
    links = [Link(a, b, 1e9, 1e-5) for a in names for b in names if a != b]
    times = [{n: 0.01 * (1 + i) for i, n in enumerate(names)} for _ in range(3)]
    return make_instance(times, [1000] * 3, [100] * 3, 100, devs, links, source)


def test_overlapping_groups_conflict_and_disjoint_ones_do_not() -> None:
    inst = soc_instance()
    assert has_core_groups(inst)
    assert core_conflict(inst, ["s.big0", "s.big1", "s.little0-3", "h"]) is None
    why = core_conflict(inst, ["s.big0-1", "s.big1"])
    assert why == "devices 's.big0-1' and 's.big1' both hold core 's.big1'"


def test_a_plan_on_overlapping_groups_is_rejected() -> None:
    inst = soc_instance()
    with pytest.raises(
        InputError, match=r"overlapping core groups: devices 's\.little0-2' and 's\.little2'"
    ):
        validate_stages(inst, [Stage(0, 1, ("s.little0-2",)), Stage(2, 2, ("s.little2",))])


def test_families_are_the_maximal_disjoint_sets_per_type_combined() -> None:
    fams = core_families(soc_instance())
    # 2 cores: {0-1}, {0, 1}; 4 cores: the 8 compositions of 4 -> 16 families
    assert len(fams) == 16 and len(set(fams)) == 16
    inst = soc_instance()
    for fam in fams:
        assert core_conflict(inst, fam) is None
        cores = {c for d in fam for c in inst.device_by_name[d].cores}
        assert len(cores) == 6  # maximal: every core is used by the family
    assert ("s.big0-1", "s.little0-3") in fams
    assert core_families(make_instance([{"a": 1.0}], [1], [1], 1, [Device("a", 10)], [], "a")) == [
        ()
    ]


def test_a_family_instance_keeps_plain_devices_and_prices_an_outside_source_out() -> None:
    inst = soc_instance()
    sub = family_instance(inst, ("s.big0-1", "s.little0-3"))
    assert set(sub.device_names) == {"h", "s.big0", "s.big0-1", "s.little0-3"}
    assert sub.source == "s.big0"
    whole = sum(max(pc.time_s.values()) for pc in inst.pieces)
    assert all(pc.time_s["s.big0"] == UNREACHABLE_FACTOR * whole for pc in sub.pieces)
    assert sub.pieces[0].time_s["h"] == inst.pieces[0].time_s["h"]
    assert sub.device_by_name["s.big0"].cores == ()  # an endpoint only: no clash to report
    inside = family_instance(inst, ("s.big0", "s.big1", "s.little0-3"))
    assert inside.pieces[0].time_s["s.big0"] == inst.pieces[0].time_s["s.big0"]


def test_cores_survive_the_instance_json() -> None:
    inst = soc_instance(1, 2)
    again = Instance.from_dict(inst.to_dict())
    assert again.device_by_name["s.little0-1"].cores == ("s.little0", "s.little1")
    assert again == inst
