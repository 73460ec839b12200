"""Clusters: heterogeneous devices, the links and shared media between them, read from YAML.

``load_cluster(path)`` validates a cluster file and converts its human units (GiB, Mbit/s, ms,
GHz) into coinfer's seconds / bytes / bytes-per-second; ``default_local_cluster()`` is the
embedded local testbed (four cgroup-quota devices on this machine). See ``docs/clusters.md``.
"""

from __future__ import annotations

from .load import cluster_from_dict, cluster_from_yaml, load_cluster, load_trace
from .local import default_local_cluster
from .types import (
    BandwidthTrace,
    Cluster,
    DeviceFeatures,
    DeviceSpec,
    Emulation,
    LinkSpec,
    MediumSpec,
)

__all__ = [
    "BandwidthTrace",
    "Cluster",
    "DeviceFeatures",
    "DeviceSpec",
    "Emulation",
    "LinkSpec",
    "MediumSpec",
    "cluster_from_dict",
    "cluster_from_yaml",
    "default_local_cluster",
    "load_cluster",
    "load_trace",
]
