"""Measuring child process: ``python -m coinfer.profile._child ARGS_JSON OUT_PATH``.

Started by :func:`coinfer.profile.profiler.profile_model`. After loading and capturing the model
it prints ``@@ready`` and waits for a line on stdin (meanwhile the parent moves it into the
CPU-quota cgroup), then warms up and measures. Progress goes to stderr as ``@@progress <done> <total>`` lines; the result is written to
OUT_PATH (a file, not stdout, so a large profile can never block on a full pipe). Errors go
to stderr as one last line and a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from ..errors import CoinferError
    from .profiler import measure

    args = json.loads(argv[0])
    out_path = Path(argv[1])

    def progress(done: int, total: int) -> None:
        print(f"@@progress {done} {total}", file=sys.stderr, flush=True)

    def ready() -> None:
        # the parent moves us into the quota cgroup, then answers on stdin
        print("@@ready", file=sys.stderr, flush=True)
        sys.stdin.readline()

    try:
        data = measure(
            args["spec"],
            input_shape=args.get("input_shape"),
            max_pieces=args.get("max_pieces"),
            threads=args["threads"],
            quota=args.get("quota"),
            repeats=args["repeats"],
            warmup=args["warmup"],
            progress=progress,
            on_ready=ready,
        )
    except CoinferError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out_path.write_text(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
