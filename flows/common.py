"""What every flow needs: the config, the ledger, retry settings, the run id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from shiplift import notify
from shiplift.config import Config, EnvironmentConfig, load_config
from shiplift.errors import ReleaseError
from shiplift.ledger import Ledger, ledger_url, open_ledger
from shiplift.model import resource_name
from shiplift.progress import report

T = TypeVar("T", bound=Task[Any, Any])


@dataclass
class Context:
    config: Config
    ledger: Ledger
    run_id: str | None

    def retried(self, task: T) -> T:
        """``task`` with the config's retry budget: exponential backoff with jitter."""
        retries = self.config.retries
        if not retries.backoff_seconds:
            return task.with_options(retries=retries.count, retry_delay_seconds=0)  # type: ignore[return-value]
        return task.with_options(  # type: ignore[return-value]
            retries=retries.count,
            retry_delay_seconds=exponential_backoff(retries.backoff_seconds),
            retry_jitter_factor=retries.jitter,
        )


def open_context(config_path: str) -> Context:
    config = load_config(config_path)
    ledger = open_ledger(ledger_url(config.root, config.ledger.url))
    run_id = flow_run.get_id()
    install_announcer(config, str(run_id) if run_id else None)
    return Context(config=config, ledger=ledger, run_id=str(run_id) if run_id else None)


def install_announcer(config: Config, run_id: str | None) -> None:
    """This run's phase changes become Prefect events and ``notify[]`` posts (:mod:`shiplift.notify`)."""
    from prefect import get_run_logger
    from prefect.events import emit_event
    from prefect.exceptions import MissingContextError

    from shiplift.prefect_api import ApiError, server

    try:
        run_url = server().run_url(run_id) if run_id else None
    except ApiError:  # a temporary server: its runs are gone once it stops
        run_url = None
    announcer = notify.Announcer(config.notify, run_url, emit=emit_event)
    with suppress(MissingContextError):  # the run's log, shown in its page of the Prefect UI
        announcer.warn = get_run_logger().warning
    notify.install(announcer)


LOCK_LEASE_SECONDS = 60
"""A killed holder's slot frees once its lease lapses (Prefect's shortest lease is 60 s)."""


class LockTimeout(ReleaseError):
    """The environment lock was not free within ``lock_timeout_seconds``; nothing was changed."""


@contextmanager
def environment_lock(
    ctx: Context, env: EnvironmentConfig, timeout_seconds: float | None = None
) -> Iterator[None]:
    """Hold the strict global concurrency limit ``shiplift-<app>-<env>`` (one slot), then the
    ledger's lock of the environment (``Ledger.environment_lock``)."""
    name = resource_name(ctx.config.app, env.name)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    report(f"{env.name}: waiting for the environment lock {name}")
    wait = env.lock_timeout_seconds if timeout_seconds is None else timeout_seconds
    held = False
    try:
        # then the ledger's own lock: runs that share the ledger but not the Prefect server (a
        # laptop's temporary one) exclude each other too
        with (
            concurrency(name, occupy=1, strict=True, lease_duration=LOCK_LEASE_SECONDS, timeout_seconds=wait),
            ctx.ledger.environment_lock(ctx.config.app, env.name, timeout_seconds=wait),
        ):
            held = True
            yield
    except TimeoutError:
        if held:
            raise
        raise LockTimeout(
            f"{env.name}: another promotion held the environment lock {name} for "
            f"{wait:g}s; try again later (or raise lock_timeout_seconds)"
        ) from None


def supersede_run(old_run_id: str, new_run_id: str) -> None:
    """Cancel a run that left a deployment unfinished (its process died, e.g. paused for approval).

    The new run takes the deployment over, with the decisions already recorded in the ledger,
    so the old run must not stay "Paused" in the UI waiting for a resume nobody executes.
    """
    from uuid import UUID

    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(old_run_id))
        except Exception:  # noqa: BLE001 - a run the server forgot needs no cancelling
            return
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(
                UUID(old_run_id), Cancelled(message=f"superseded by run {new_run_id}"), force=True
            )
