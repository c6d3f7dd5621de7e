"""shiplift.notify without Prefect: the config's notify[], the message, posting to real loopback
receivers (one that records, one that answers 500, one that is down), the events handed on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shiplift import notify
from shiplift.config import NOTIFY_EVENTS, ApprovalConfig, NotifyConfig, parse_config
from shiplift.errors import ConfigError
from shiplift.model import Phase
from tests.support.webhook import down_url, receiver

BASE = """app: hello
image: {repository: 127.0.0.1:5000/hello}
health: {path: /healthz}
environments:
  - name: prod
    target: {kind: docker}
    port: 18084
"""
SECRET = "s3cr3t-token"


def _config(extra: str) -> Any:
    return parse_config(BASE + extra)


def test_config_takes_env_var_urls_and_the_yaml_on_key() -> None:
    config = _config("notify: [{url: env:SLACK_WEBHOOK, on: [awaiting_approval, succeeded, drill_failed]}]\n")
    (one,) = config.notify
    assert one.url == "env:SLACK_WEBHOOK"
    assert one.on == ["awaiting_approval", "succeeded", "drill_failed"]
    # the default: what the issue lists
    (default,) = _config("notify: [{url: 'https://hooks.example.com/x'}]\n").notify
    assert default.on == [
        "awaiting_approval",
        "succeeded",
        "failed",
        "aborted",
        "drill_failed",
        "backup_failed",
    ]
    assert SECRET not in repr(_config(f"notify: [{{url: 'https://h.example.com/{SECRET}'}}]\n"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "notify: [{url: env:X, on: [succeeded, deployed]}]\n",
            "shiplift.yaml:8: notify[0].on[1]: 'deployed' is not an event; known: awaiting_approval,",
        ),
        (
            f"notify: [{{url: 'hooks.example.com/{SECRET}'}}]\n",
            "shiplift.yaml:8: notify[0].url: the url is an https:// webhook URL or env:VAR",
        ),
        ("notify: [{url: env:X, on: []}]\n", "shiplift.yaml:8: notify[0].on:"),
    ],
)
def test_config_refuses_bad_notify_in_one_line(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(extra)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text and SECRET not in text, text


def test_every_phase_but_pending_is_an_event() -> None:
    events = {notify.event_of(p) for p in Phase if p is not Phase.PENDING}
    assert events == set(NOTIFY_EVENTS) - {"drill_failed", "backup_failed"}
    assert notify.event_of(Phase.AWAITING_APPROVAL) == "awaiting_approval"
    assert notify.event_of(Phase.ROLLED_BACK) == "rolled_back"
    assert notify.event_of("drill_failed") == "drill_failed"


def test_message_names_app_env_version_who_is_awaited_and_the_run() -> None:
    policy = ApprovalConfig(approvers=["alice", "bob", "dave"], min_approvals=1, forbid_self_approval=True)
    notice = notify.Notice(
        "hello",
        "prod",
        "v2",
        "awaiting_approval",
        awaited=notify.awaited(policy, "dave"),
        run_url="http://127.0.0.1:4200/runs/flow-run/abc",
    )
    assert notice.text() == (
        "hello v2 in prod: awaits approval\n"
        "waiting for 1 approval of alice, bob, dave (not dave, the author)\n"
        "Prefect run: http://127.0.0.1:4200/runs/flow-run/abc"
    )
    assert notice.prefect_event == "shiplift.deployment.awaiting_approval"
    assert notice.resource["prefect.resource.id"] == "shiplift.hello.prod"
    drill = notify.Notice("hello", "main", "20261201T0200Z-ab12", "drill_failed", reason="table t: 3 rows")
    assert drill.text().startswith("hello: the restore drill of database main FAILED\ntable t: 3 rows")
    assert drill.prefect_event == "shiplift.drill.failed"
    assert drill.resource["prefect.resource.id"] == "shiplift.database.hello.main"


def _collect() -> tuple[list[str], notify.Warn]:
    lines: list[str] = []
    return lines, lines.append


def test_posts_reach_a_receiver_with_an_env_var_url_read_at_send_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines, warn = _collect()
    target = NotifyConfig(url="env:TEST_NOTIFY_HOOK", on=["succeeded"])
    notice = notify.Notice("hello", "prod", "v2", "succeeded")
    with receiver() as ok:
        monkeypatch.delenv("TEST_NOTIFY_HOOK", raising=False)
        assert not notify.deliver(0, target, notice, warn)
        assert lines == [
            "notify[0] (env:TEST_NOTIFY_HOOK): succeeded not posted: the environment variable TEST_NOTIFY_HOOK is not set"
        ]
        monkeypatch.setenv("TEST_NOTIFY_HOOK", ok.url)
        assert notify.deliver(0, target, notice, warn)
    assert ok.posts == [{"text": "hello v2 in prod: succeeded"}]
    assert ok.paths == [f"/services/T000/B000/{SECRET}"]


def test_a_500_is_retried_then_one_warning_without_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "BACKOFF_SECONDS", 0.1)
    lines, warn = _collect()
    with receiver(500) as failing:
        target = NotifyConfig(url=failing.url, retries=2, timeout_seconds=2)
        t0 = time.monotonic()
        assert not notify.deliver(3, target, notify.Notice("hello", "prod", "v2", "failed", reason="x"), warn)
        took = time.monotonic() - t0
    assert len(failing.posts) == 3  # the first try and two retries
    assert 0.3 <= took < 10, took  # backoff 0.1 s, then 0.2 s
    (line,) = lines
    host = failing.url.split("/")[2]
    assert (
        line
        == f"notify[3]: could not post failed of hello v2 in prod to {host} (HTTP 500; 3 tries); nothing else is affected"
    )
    assert SECRET not in line


def test_a_receiver_that_is_down_costs_a_bounded_time_and_one_warning() -> None:
    lines, warn = _collect()
    url = down_url()
    target = NotifyConfig(url=url, retries=1, timeout_seconds=1)
    t0 = time.monotonic()
    assert not notify.deliver(0, target, notify.Notice("hello", "prod", "v2", "aborted"), warn)
    assert time.monotonic() - t0 < notify.budget(target) + 1
    (line,) = lines
    assert "ConnectError" in line and "2 tries" in line and SECRET not in line, line


def test_a_4xx_is_not_retried() -> None:
    lines, warn = _collect()
    with receiver(404) as gone:
        assert not notify.deliver(0, NotifyConfig(url=gone.url), notify.Notice("a", "b", "v", "failed"), warn)
    assert len(gone.posts) == 1 and "HTTP 404; 1 try" in lines[0]


def test_announce_phase_emits_every_change_and_posts_what_on_names() -> None:
    events: list[dict[str, Any]] = []
    lines, warn = _collect()
    with receiver() as ok, receiver(500) as failing:
        announcer = notify.Announcer(
            [
                NotifyConfig(url=ok.url, on=["awaiting_approval", "succeeded"]),
                NotifyConfig(url=failing.url, on=["succeeded"], retries=0),
            ],
            run_url="http://ui/runs/flow-run/1",
            emit=lambda **event: events.append(event),
            warn=warn,
        )
        notify.install(announcer)
        try:
            notify.announce_phase(
                "hello", "prod", "v2", Phase.AWAITING_APPROVAL, awaited="1 approval of alice"
            )
            notify.announce_phase("hello", "prod", "v2", Phase.PROGRESSING)
            notify.announce_phase("hello", "prod", "v2", Phase.PROGRESSING)  # the next step: no change
            notify.announce_phase("hello", "prod", "v2", Phase.SUCCEEDED)
            notify.announce_phase("hello", "prod", "v2", "no-such-phase")  # never raises
            assert notify.flush(20)
        finally:
            notify.install(None)
    assert [e["event"] for e in events] == [
        "shiplift.deployment.awaiting_approval",
        "shiplift.deployment.progressing",
        "shiplift.deployment.succeeded",
    ]
    assert events[0]["resource"]["prefect.resource.id"] == "shiplift.hello.prod"
    assert events[0]["payload"]["awaited"] == "1 approval of alice"
    assert ok.texts() == [
        "hello v2 in prod: awaits approval\nwaiting for 1 approval of alice\nPrefect run: http://ui/runs/flow-run/1",
        "hello v2 in prod: succeeded\nPrefect run: http://ui/runs/flow-run/1",
    ]
    assert len(failing.posts) == 1
    assert sorted(line.split(":")[0] for line in lines) == ["notify", "notify[1]"]  # either may come first
    assert any("no-such-phase of hello v2 in prod not announced: ValueError" in line for line in lines), lines


def test_without_an_announcer_nothing_happens_and_an_emit_that_fails_is_only_a_warning() -> None:
    notify.announce_phase("hello", "prod", "v2", Phase.SUCCEEDED)  # no announcer: nothing

    def broken(**event: Any) -> None:
        raise RuntimeError("the events client is gone")

    lines, warn = _collect()
    notify.install(notify.Announcer(emit=broken, warn=warn))
    try:
        notify.announce_phase("hello", "prod", "v2", Phase.FAILED, reason="boom")
    finally:
        notify.install(None)
    assert lines == ["notify: could not emit the event shiplift.deployment.failed: RuntimeError"]
