"""One way to make a rich console for every command.

Why: model specs such as ``model.py:factory`` contain ``:name:`` sequences that rich would
replace with emoji, and piped output should not be wrapped at 80 columns.
"""

from __future__ import annotations

import sys
from typing import Any


def make_console(*, stderr: bool = False) -> Any:
    """A rich Console without emoji substitution; 160 columns when not writing to a terminal."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, emoji=False, width=None if stream.isatty() else 160)
