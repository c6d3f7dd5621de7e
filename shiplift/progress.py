"""A process-wide progress sink for long steps (build, push, waiting for health).

The CLI installs a reporter that draws a live status line (``report``) and prints lines that
stay (``announce``); without one, both are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[str, bool], None]
_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter


def report(message: str) -> None:
    """A transient status: what is happening now."""
    if _reporter is not None:
        _reporter(message, False)


def announce(message: str) -> None:
    """A line that stays: a step finished."""
    if _reporter is not None:
        _reporter(message, True)
