"""Multi-core SoCs in cluster files: the schema, the expansion into core groups, round trips and
one-line errors (coinfer.cluster.socs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coinfer.cluster import cluster_from_yaml, load_cluster
from coinfer.cluster.load import cluster_from_dict
from coinfer.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clusters" / "biglittle_testbed.yaml"

SOC = """
name: lab
source: {source}
devices:
  - {{name: host, speed: {{gflops: 50}}, memory: 4GiB}}
socs:
  - name: soc
    memory: 1GiB
    handoff: {{bandwidth_mbps: 8000, latency_ms: 0.05}}
    cores:
      - {{type: big, count: 2, speed: {{gflops: 10}}, power: {{idle: 0.1, active: 1.0}},
          emulate: {{cpu_quota: 0.4, cpus: [0, 1]}}}}
      - {{type: little, count: 3, speed: {{gflops: 3, speedup: [1, 1.8, 2.4]}},
          dvfs_ghz: [0.7, 1.4]}}
links:
  - {{src: host, dst: soc, bandwidth_mbps: 100, latency_ms: 1}}
"""


def _load(source: str = "soc", text: str = SOC) -> object:
    return cluster_from_yaml(text.format(source=source), origin="lab.yaml")


def test_a_soc_expands_into_runs_of_cores_of_one_type() -> None:
    cl = _load()
    groups = [d for d in cl.devices if d.soc == "soc"]
    assert [d.name for d in groups] == [
        "soc.big0", "soc.big1", "soc.big0-1",
        "soc.little0", "soc.little1", "soc.little2", "soc.little0-1", "soc.little1-2",
        "soc.little0-2",
    ]  # fmt: skip
    pair = cl.device("soc.big0-1")
    assert pair.kind == "core" and pair.cores == ("soc.big0", "soc.big1")
    # k cores: k threads under k x the core's quota, pinned to its cores' host CPUs
    assert (pair.emulate.threads, pair.emulate.cpu_quota, pair.emulate.cpus) == (2, 0.8, (0, 1))
    assert cl.device("soc.big1").emulate.cpus == (1,)
    # memory shared per core (5 cores), power per core, analytic speed from the speed-ups
    assert pair.mem_bytes == (1 << 30) * 2 // 5
    assert (pair.power_idle_w, pair.power_active_w) == (0.2, 2.0)
    assert pair.gflops == 20.0  # no speedup given: ideal scaling (an upper bound)
    assert cl.device("soc.little0-2").gflops == pytest.approx(3 * 2.4)
    assert cl.device("soc.little1").dvfs_levels == (0.5, 1.0)
    assert cl.device("soc.little1").emulate is None


def test_links_of_a_soc_handoffs_and_links_naming_it() -> None:
    cl = _load()
    groups = [d.name for d in cl.devices if d.soc]
    for a in groups:
        for b in groups:
            if a != b:
                lk = cl.link(a, b)
                assert lk is not None and lk.bandwidth_Bps == 1e9 and lk.latency_s == 5e-5
        assert cl.link("host", a).bandwidth_Bps == 12.5e6
        assert cl.link(a, "host").latency_s == 0.001


def test_the_soc_as_source_is_its_first_core() -> None:
    assert _load("soc").source == "soc.big0"
    assert _load("host").source == "host"
    assert _load("soc.little2").source == "soc.little2"


def test_round_trip_through_the_schema() -> None:
    cl = _load()
    again = cluster_from_dict(cl.to_dict(), origin="again")
    assert again == cl
    assert [d["name"] for d in cl.to_dict()["devices"]] == ["host"]
    assert len(cl.to_dict()["links"]) == 2  # host->soc, soc->host


def test_the_runnable_example_loads_and_fits_the_host() -> None:
    cl = load_cluster(EXAMPLE)
    assert cl.source == "soc.big0"
    singles = [d for d in cl.devices if len(d.cores) == 1]
    assert len(singles) == 6
    per_cpu: dict[int, float] = {}
    for d in singles:
        (cpu,) = d.emulate.cpus
        per_cpu[cpu] = per_cpu.get(cpu, 0.0) + d.emulate.cpu_quota
    # the whole SoC on two host CPUs, each below 1.0 so helper threads have room
    assert sorted(per_cpu) == [0, 1] and all(v <= 0.75 for v in per_cpu.values())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("type: little", "type: big"),
            r"^lab\.yaml: socs\[0\]\.cores\[1\]\.type: duplicate core type \(got 'big'\)$",
        ),
        (
            ("speedup: [1, 1.8, 2.4]", "speedup: [1, 1.8]"),
            r"^lab\.yaml: socs\[0\]\.cores\[1\]\.speed\.speedup: needs one speed-up per core count 1\.\.3",
        ),
        (
            ("cpu_quota: 0.4", "cpu_quota: 1.5"),
            r"^lab\.yaml: socs\[0\]\.cores\[0\]\.emulate\.cpu_quota: must be <= 1 \(got 1\.5\)$",
        ),
        (("type: big", "type: big2"), r"^lab\.yaml: socs\[0\]\.cores\[0\]\.type: "),
        (
            ("dst: soc,", "dst: sok,"),
            r"^lab\.yaml: links\[0\]\.dst: unknown device \(got 'sok'; devices: host, soc\)$",
        ),
        (("name: host", "name: soc"), r"^lab\.yaml: "),
        (
            ("handoff: {bandwidth_mbps: 8000, latency_ms: 0.05}", "handoff: {latency_ms: 0.05}"),
            r"^lab\.yaml: socs\[0\]\.handoff\.bandwidth_mbps: missing required field$",
        ),
        (
            ("dvfs_ghz: [0.7, 1.4]", "dvfs_levels: [0.5, 0.9]"),
            r"^lab\.yaml: socs\[0\]\.cores\[1\]\.dvfs_levels: the highest level must be 1\.0",
        ),
    ],
)
def test_bad_soc_entries_are_one_line_errors(edit: tuple[str, str], message: str) -> None:
    text = SOC.replace(
        edit[0].replace("{", "{{").replace("}", "}}"), edit[1].replace("{", "{{").replace("}", "}}")
    )
    with pytest.raises(InputError) as err:
        _load("host", text)
    assert "\n" not in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


def test_a_cluster_needs_a_device_or_a_soc() -> None:
    with pytest.raises(
        InputError, match=r"^x: devices: give at least one device \(under 'devices' or 'socs'\)$"
    ):
        cluster_from_dict({"name": "x", "source": "a"}, origin="x")


def test_a_calibrated_core_group_cannot_be_written_back_silently() -> None:
    import dataclasses

    cl = _load()
    devices = tuple(
        dataclasses.replace(d, speed_scale=1.2) if d.name == "soc.big1" else d for d in cl.devices
    )
    with pytest.raises(InputError, match=r"^lab\.yaml: core group 'soc\.big1' has a calibrated"):
        dataclasses.replace(cl, devices=devices).to_dict()
