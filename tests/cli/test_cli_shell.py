"""CLI shell behaviour shared by every command: clean errors, no heavy imports."""

from __future__ import annotations

import subprocess
import sys


def test_import_coinfer_is_light() -> None:
    code = (
        "import sys, coinfer; "
        "bad = [m for m in ('transformers', 'matplotlib', 'torch', 'simpy', 'sklearn') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coinfer", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_cli_reference_is_current() -> None:
    """docs/cli.md is generated from the commands; regenerate with scripts/gen_cli_docs.py."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_cli_docs.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, "docs/cli.md is stale: run scripts/gen_cli_docs.py"
