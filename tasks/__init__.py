"""Prefect tasks: thin wrappers around shiplift's core adding retries, timeouts and logs.

One module per concern. No task decides what happens next; that is the flows' job.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from shiplift.errors import BuildError, ConfigError, ReleaseError, UnhealthyError

PERMANENT: tuple[type[BaseException], ...] = (BuildError, ConfigError, ReleaseError, UnhealthyError)
"""Failures a retry cannot fix: they fail the task at once."""


def is_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition: retry anything but the permanent failures above."""
    try:
        state.result()
    except PERMANENT:
        return False
    except BaseException:  # noqa: BLE001 - everything else is worth another try
        return True
    return True
