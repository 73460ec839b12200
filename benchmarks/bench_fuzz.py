"""Fuzz the command line: thousands of mutated cluster files, instance files and plans.

Each generated document (``tests/support/fuzz_inputs.py``: a valid file with 1-3 random edits —
a value replaced by junk, a field deleted or added, a list item duplicated, the whole file
replaced) is written to disk and given to the CLI in-process: ``coinfer cluster check FILE``,
``coinfer plan --instance FILE --algo dp``, ``coinfer simulate --instance VALID --plan FILE``.
An outcome is acceptable when the command succeeds (exit 0) or exits 2 with exactly one line on
stderr; anything else — another exit code, a traceback, a multi-line message, a run longer than
``--limit-s`` — is recorded as a failure with its input. Results go to
``benchmarks/results/fuzz.{json,md}``.

    python benchmarks/bench_fuzz.py                 # 1,000 of each kind
    python benchmarks/bench_fuzz.py --examples 200
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_runtime_common import RESULTS, ROOT, host_load

sys.path.insert(0, str(ROOT / "tests" / "support"))


def outcome(argv: list[str], limit_s: float) -> dict[str, Any]:
    """Run the CLI in-process; exit code, stderr lines and seconds."""
    from coinfer.cli import main

    err = io.StringIO()
    t0 = time.perf_counter()
    code: Any = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # a crash is a finding, not a benchmark failure
        code = f"raised {type(exc).__name__}: {exc}"[:300]
    secs = time.perf_counter() - t0
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    ok = (code in (0, None) and not lines) or (code == 2 and len(lines) == 1)
    return {"code": code, "lines": lines[:5], "seconds": secs, "ok": ok and secs <= limit_s}


def run_kind(kind: str, examples: int, limit_s: float, workdir: Path) -> dict[str, Any]:
    import yaml
    from fuzz_inputs import CLUSTER, INSTANCE, PLAN, mutated
    from hypothesis import HealthCheck, given, settings

    base = {"cluster": CLUSTER, "instance": INSTANCE, "plan": PLAN}[kind]
    valid_instance = workdir / "valid-instance.json"
    valid_instance.write_text(json.dumps(INSTANCE))
    stats: dict[str, Any] = {"kind": kind, "examples": 0, "exit0": 0, "exit2": 0, "failures": []}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(doc=mutated(base))
    def one(doc: Any) -> None:
        path = workdir / f"doc.{'yaml' if kind == 'cluster' else 'json'}"
        if kind == "cluster":
            path.write_text(yaml.safe_dump(doc) if not isinstance(doc, float) else str(doc))
            argv = ["cluster", "check", str(path)]
        else:
            path.write_text(json.dumps(doc))
            argv = (["plan", "--instance", str(path), "--algo", "dp"] if kind == "instance"
                    else ["simulate", "--instance", str(valid_instance), "--plan", str(path)])  # fmt: skip
        res = outcome(argv, limit_s)
        stats["examples"] += 1
        stats["exit0" if res["code"] in (0, None) else "exit2"] += res["code"] in (0, None, 2)
        if not res["ok"]:
            stats["failures"].append({"doc": json.dumps(doc, default=str)[:500], **res})

    one()
    return stats


def markdown(results: list[dict[str, Any]], load: dict[str, Any]) -> str:
    lines = [
        "| input | generated | accepted (exit 0) | one-line error (exit 2) | anything else |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['kind']} | {r['examples']} | {r['exit0']} | {r['exit2']} | "
                     f"{len(r['failures'])} |")  # fmt: skip
    lines += [
        "",
        f"Host load at the start: {load['loadavg_1m']:.1f} (1 min) on {load['cores']} cores.",
    ]
    for r in results:
        for f in r["failures"][:5]:
            lines.append(
                f"- {r['kind']}: exit {f['code']}, {f['lines'][:2]} for `{f['doc'][:160]}`"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--limit-s", type=float, default=10.0, help="slowest acceptable answer")
    ap.add_argument("--out", default=str(RESULTS / "fuzz.json"))
    args = ap.parse_args()
    load = host_load()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("cluster", "instance", "plan"):
            t0 = time.perf_counter()
            res = run_kind(kind, args.examples, args.limit_s, Path(tmp))
            res["seconds"] = time.perf_counter() - t0
            print(f"{kind}: {res['examples']} generated, {len(res['failures'])} failures "
                  f"({res['seconds']:.0f} s)", flush=True)  # fmt: skip
            results.append(res)
    Path(args.out).write_text(json.dumps({"load": load, "results": results}, indent=1))
    Path(args.out.replace(".json", ".md")).write_text(markdown(results, load))
    print(markdown(results, load))


if __name__ == "__main__":
    main()
