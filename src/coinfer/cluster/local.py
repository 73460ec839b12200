"""The embedded local testbed: four emulated devices on this machine.

Heterogeneity is real, not simulated: each device is a worker process under a cgroup v1 CPU
quota (0.6 / 0.4 / 0.3 / 0.2 of one core, one intra-op thread), so a piece really runs ~3x
slower on ``d3`` than on ``d0``. Links are loopback with bandwidth and latency emulated in the
transport (this kernel has no netem). ``examples/clusters/local_testbed.yaml`` holds the same
text (a test keeps them equal).
"""

from __future__ import annotations

from .load import cluster_from_yaml
from .types import Cluster

# Figures and why:
# - the arithmetic that keeps the testbed honest (2 CPUs): quotas sum to 1.5 cores and pack onto
#   the CPUs as 0.6+0.2 (CPU 0) and 0.4+0.3 (CPU 1) (runtime.emulation.pack_cpus), leaving 0.2
#   and 0.3 of a core for what runs outside the quotas: each worker's communication threads
#   (link senders, receiver, gloo I/O; measured and reported per run as helper_cpu_share, a few
#   per cent of a core per device on the demo) and the coordinator. Quotas are caps, not
#   reservations: the earlier 0.75+0.25 / 0.5+0.3 packing filled CPU 0 to 1.0, and d0 (source,
#   client and bottleneck stage) then computed 35% slower than its profile (dp plan, ResNet-18).
# - gflops: effective single-thread GFLOP/s this host reaches on the small zoo CNNs (about 30;
#   a 512x512 matmul peaks near 90 but small layers are dominated by per-op overhead), scaled by
#   the quota. Only used when neither a profile nor the predictor is available.
# - memory: a budget per emulated device, small enough that memory constraints can bind in demos.
# - power: nominal figures (idle 2 W, +10 W per busy core) so the energy objective is exercised;
#   they are NOT measured on this host.
# - links: 1000/500/200/100 Mbit/s and 1-2 ms, Ethernet- to Wi-Fi-like, emulated in the transport.
LOCAL_TESTBED_YAML = """\
name: local-testbed
source: d0
devices:
  - name: d0
    kind: cpu
    speed: {gflops: 18.0, predict: {cores: 1, threads: 1, quota: 0.6}}
    memory: 2GiB
    power: {idle: 2.0, active: 12.0, transmit: 1.0}
    emulate: {cpu_quota: 0.6, threads: 1}
  - name: d1
    kind: cpu
    speed: {gflops: 12.0, predict: {cores: 1, threads: 1, quota: 0.4}}
    memory: 1GiB
    power: {idle: 2.0, active: 8.0, transmit: 1.0}
    emulate: {cpu_quota: 0.4, threads: 1}
  - name: d2
    kind: cpu
    speed: {gflops: 9.0, predict: {cores: 1, threads: 1, quota: 0.3}}
    memory: 1GiB
    power: {idle: 2.0, active: 6.0, transmit: 1.0}
    emulate: {cpu_quota: 0.3, threads: 1}
  - name: d3
    kind: cpu
    speed: {gflops: 6.0, predict: {cores: 1, threads: 1, quota: 0.2}}
    memory: 512MiB
    power: {idle: 2.0, active: 4.5, transmit: 1.0}
    emulate: {cpu_quota: 0.2, threads: 1}
links:
  - {src: d0, dst: d1, bandwidth_mbps: 1000, latency_ms: 1}
  - {src: d0, dst: d2, bandwidth_mbps: 500, latency_ms: 1}
  - {src: d0, dst: d3, bandwidth_mbps: 200, latency_ms: 2}
  - {src: d1, dst: d2, bandwidth_mbps: 500, latency_ms: 1}
  - {src: d1, dst: d3, bandwidth_mbps: 200, latency_ms: 2}
  - {src: d2, dst: d3, bandwidth_mbps: 100, latency_ms: 2}
"""


def default_local_cluster() -> Cluster:
    """The local testbed as a :class:`Cluster` (no file needed; the demo and runtime use it)."""
    return cluster_from_yaml(LOCAL_TESTBED_YAML, origin="<default local cluster>")


__all__ = ["LOCAL_TESTBED_YAML", "default_local_cluster"]
