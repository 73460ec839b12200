"""Fuzz: mutated cluster files, instance files and plans. Each is loaded, planned or checked;
the only acceptable outcomes are success or one :class:`InputError` (the CLI's exit 2 with one
line) — never another exception. ``benchmarks/bench_fuzz.py`` runs the same with thousands."""

from __future__ import annotations

import json

import yaml
from fuzz_inputs import CLUSTER, INSTANCE, PLAN, mutated
from hypothesis import HealthCheck, given, settings

from coinfer.cluster import cluster_from_dict, cluster_from_yaml
from coinfer.core.evaluate import validate_stages
from coinfer.core.instance import Instance
from coinfer.core.plans import Plan
from coinfer.errors import CoinferError, InputError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(doc=mutated(CLUSTER))
def test_mutated_cluster_files_load_or_fail_with_one_line(doc):
    try:
        cl = cluster_from_dict(doc, origin="c.yaml")
        cluster_from_yaml(yaml.safe_dump(cl.to_dict()))  # what parses also round-trips
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("c.yaml")


@FUZZ
@given(doc=mutated(INSTANCE))
def test_mutated_instances_load_and_plan_or_fail_with_one_line(doc):
    from coinfer.plan import plan

    try:
        inst = Instance.from_dict(doc, origin="i.json")
        Instance.from_dict(json.loads(json.dumps(inst.to_dict())))
        plan(inst, "dp", "throughput")
    except CoinferError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(doc=mutated(PLAN))
def test_mutated_plans_load_and_validate_or_fail_with_one_line(doc):
    inst = Instance.from_dict(INSTANCE)
    try:
        p = Plan.from_dict(doc, origin="p.json")
        validate_stages(inst, p.stages)
    except CoinferError as exc:
        assert "\n" not in str(exc)
