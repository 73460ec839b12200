"""One device of a tiled run: ``python -m coinfer.tiled.worker SETUP.json``.

Why a process per device: the tiles of one request are computed at the same time on different
devices, each under its own CPU quota; one Python process would serialise them. What it does per
job is :func:`.job.run_job`; the process frame (gloo group, quota, JSON lines, exit) is
:func:`coinfer.runtime.workgroup.worker_main`.
"""

from __future__ import annotations

import sys

from .job import build, run_job


def main(argv: list[str] | None = None) -> int:
    from ..runtime.workgroup import worker_main

    worker_main(sys.argv[1:] if argv is None else argv, build, run_job)
    return 0  # not reached: worker_main exits the process


if __name__ == "__main__":
    sys.exit(main())
