"""Cluster files shared by several runtime test modules (imported by name: pytest puts this
folder on ``sys.path``)."""

# A line a - b - c: no a-c link, so a transfer between them is relayed by b.
LINE_YAML = """
name: line
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB}
  - {name: b, speed: {gflops: 10}, memory: 1GiB}
  - {name: c, speed: {gflops: 10}, memory: 1GiB}
links:
  - {src: a, dst: b, bandwidth_mbps: 200, latency_ms: 1}
  - {src: b, dst: c, bandwidth_mbps: 200, latency_ms: 1}
"""

# Two analytic devices, b already calibrated (scale 2), one link: calibration and refinement.
TWO_YAML = """
name: two
source: a
devices:
  - {name: a, speed: {gflops: 5}, memory: 1GiB}
  - {name: b, speed: {gflops: 5, scale: 2.0}, memory: 1GiB}
links:
  - {src: a, dst: b, bandwidth_mbps: 80, latency_ms: 1}
"""
