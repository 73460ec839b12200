"""The seeded random instance generator."""

from __future__ import annotations

import math

import numpy as np

from coinfer.testing import random_instance


def test_same_seed_same_instance_and_generator_advances() -> None:
    assert random_instance(5, 6, 3).to_dict() == random_instance(5, 6, 3).to_dict()
    rng = np.random.default_rng(5)
    assert random_instance(rng, 6, 3).to_dict() != random_instance(rng, 6, 3).to_dict()


def test_dense_and_sparse_links() -> None:
    dense = random_instance(1, 3, 5)
    assert len(dense.links) == 5 * 4
    fewer = 0
    for seed in range(10):
        sparse = random_instance(seed, 3, 6, sparse_links=True)
        fewer += len(sparse.links) < 30
        for u in sparse.device_names:  # still strongly connected (a spanning tree both ways)
            for v in sparse.device_names:
                assert math.isfinite(sparse.transfer_s(u, v, 1000))
    assert fewer >= 8


def test_tight_memory_binds() -> None:
    for seed in range(10):
        inst = random_instance(seed, 8, 3, tight_memory=True)
        whole = inst.mem_bytes(0, 7)
        biggest = max(p.mem_bytes for p in inst.pieces)
        for d in inst.devices:
            assert d.mem_bytes >= biggest
            assert d.mem_bytes < whole or d.mem_bytes == biggest


def test_power_and_dvfs() -> None:
    inst = random_instance(3, 4, 8, power=True)
    assert all(d.has_power and d.power_transmit_w for d in inst.devices)
    assert any(len(d.dvfs_levels) > 1 for d in inst.devices)
    assert not any(d.has_power for d in random_instance(3, 4, 8).devices)


def test_heterogeneous_affinity() -> None:
    """Times are not proportional across devices (task-device affinity): the speed ratio of
    two devices varies from piece to piece."""
    inst = random_instance(0, 30, 4)
    ratios = [p.time_s["d0"] / p.time_s["d1"] for p in inst.pieces]
    assert max(ratios) / min(ratios) > 1.5
