"""Config: every error is one line naming the key (and line), exit 2, nothing touched."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shiplift.cli import app
from shiplift.config import parse_config
from shiplift.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello" / "shiplift.yaml"
CONTRACT = """\
app: hello
image:
  context: .
  dockerfile: Dockerfile
  repository: 127.0.0.1:5000/hello
  build_args: {}
health:
  path: /healthz
  timeout_seconds: 60
environments:
  - name: dev
    target: {kind: docker}
    port: 18081
    strategy: {kind: replace}
  - name: prod
    target: {kind: docker}
    port: 18084
    approval: {approvers: [alice, bob], min_approvals: 1, forbid_self_approval: true, timeout_seconds: 86400}
    strategy:
      kind: canary
      steps:
        - set_weight: 20
        - analysis: {interval_seconds: 5, count: 3, success_rate_min: 0.99, p95_latency_ms_max: 500, failure_limit: 1}
        - set_weight: 100
databases:
  - name: main
    url: postgresql://user@127.0.0.1:5432/app
    store: s3://bucket/prefix
    schedule: "0 2 * * *"
    drill_schedule: "0 4 * * 0"
    retention: {daily: 7, weekly: 4, monthly: 6}
"""


def test_the_contract_example_and_the_hello_example_parse() -> None:
    config = parse_config(CONTRACT)
    assert [e.name for e in config.environments] == ["dev", "prod"]
    prod = config.environment("prod")
    assert prod.approval is not None and prod.approval.approvers == ["alice", "bob"]
    assert prod.strategy.kind == "canary" and len(prod.strategy.steps) == 3
    assert config.databases[0].retention.weekly == 4
    hello = parse_config(EXAMPLE.read_text())
    assert [e.port for e in hello.environments] == [18081, 18082, 18083, 18084]


@pytest.mark.parametrize(
    ("change", "key", "message", "on_line"),
    [
        (lambda d: d.update(colour="blue"), "colour", "unknown key", "colour:"),
        (
            lambda d: d["environments"][1].update(name="dev"),
            "environments[1].name",
            "duplicate environment 'dev'",
            "name: dev",
        ),
        (
            lambda d: d["environments"][1].update(port=18081),
            "environments[1].port",
            "port 18081 is already used by environment 'dev'",
            "port: 18081",
        ),
        (
            lambda d: d["image"].update(repository="127.0.0.1:5000/Hello World"),
            "image.repository",
            "'127.0.0.1:5000/Hello World' is not a valid image repository (lower-case path, optional registry host)",
            "repository:",
        ),
        (
            lambda d: d["image"].update(repository="127.0.0.1:5000/hello:v1"),
            "image.repository",
            "'127.0.0.1:5000/hello:v1' must be a repository without tag or digest",
            "repository:",
        ),
        (lambda d: d["health"].pop("path"), "health.path", "required key is missing", "health:"),
        (
            lambda d: d["environments"][0]["target"].update(kind="nomad"),
            "environments[0].target.kind",
            "unknown target kind 'nomad' (known: docker, kubernetes)",
            "kind: nomad",
        ),
        (
            lambda d: d["environments"][1]["strategy"]["steps"][0].update(set_weight=120),
            "environments[1].strategy.steps[0].set_weight",
            "Input should be less than or equal to 100",
            "set_weight: 120",
        ),
        (
            lambda d: d["environments"][1]["approval"].update(min_approvals=3),
            "environments[1].approval",
            "min_approvals 3 exceeds the 2 approvers",
            "approval:",
        ),
        (
            lambda d: d["environments"][1]["strategy"]["steps"].append({"pause": {}}),
            "environments[1].strategy.steps[3].pause",
            "a pause has either duration_seconds or until_approved: true",
            "pause: {}",
        ),
        (
            lambda d: d["environments"][1]["strategy"]["steps"].append({"wait": 3}),
            "environments[1].strategy.steps[3]",
            "a step is one of set_weight, pause or analysis",
            "wait: 3",
        ),
        (
            lambda d: d["environments"][1]["strategy"].update(kind="ab"),
            "environments[1].strategy",
            "ab steps are pause and analysis only (set_weight is for canary)",
            "strategy:",
        ),
        (
            lambda d: d["environments"][1].update(strategy={"kind": "blue_green"}),
            "environments[1].strategy",
            "blue_green needs preview_port",
            "strategy:",
        ),
        (
            lambda d: d["environments"][1].update(strategy={"kind": "canary"}),
            "environments[1].strategy",
            "canary needs steps (set_weight, pause, analysis)",
            "strategy:",
        ),
        (
            lambda d: d["environments"][1].update(
                strategy={"kind": "blue_green", "preview_port": 18081, "steps": []}
            ),
            "environments[1].port",
            "port 18081 is already used by environment 'dev'",
            "port: 18084",
        ),
        (
            lambda d: d["environments"][1]["strategy"]["steps"][1]["analysis"].update(
                provider={"kind": "prometheus", "address": "http://127.0.0.1:9090"}
            ),
            "environments[1].strategy.steps[1].analysis.provider",
            "a prometheus provider needs requests_query",
            "provider:",
        ),
    ],
)
def test_each_error_names_the_key_and_line(change: Any, key: str, message: str, on_line: str) -> None:
    doc = yaml.safe_load(CONTRACT)
    change(doc)
    text = yaml.safe_dump(doc, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    match = re.fullmatch(r"shiplift\.yaml:(\d+): (.+?): (.+)", str(info.value))
    assert match, str(info.value)
    line, got_key, got_message = int(match.group(1)), match.group(2), match.group(3)
    assert (got_key, got_message) == (key, message)
    assert on_line in text.splitlines()[line - 1]


def test_malformed_yaml_and_duplicate_keys_name_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^shiplift.yaml:4: malformed YAML: .*flow sequence at line 3"):
        parse_config("app: hello\nimage:\n  repository: [unclosed\n")
    with pytest.raises(ConfigError, match=r"^shiplift.yaml:2: malformed YAML: duplicate key 'app'"):
        parse_config("app: hello\napp: again\n")
    with pytest.raises(ConfigError, match=r"the document must be a mapping"):
        parse_config("- just\n- a list\n")


# Hypothesis: malformed documents never produce anything but a ConfigError -------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


BASE = yaml.safe_load(CONTRACT)
PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(_values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(_values)
        except (KeyError, IndexError, TypeError):
            continue
    text = yaml.safe_dump(doc, sort_keys=False)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(
            st.sampled_from(["", "{", "[", ":", "\t", "&a *b", "!!python/object:os.system x", "\x00"])
        )
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.text(max_size=200)))
def test_parse_config_raises_only_config_errors(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=mutated())
def test_the_cli_answers_malformed_config_with_one_line_and_exit_2(tmp_path: Path, text: str) -> None:
    try:
        parse_config(text)
        assume(False)  # a mutation that stayed valid is not what this test is about
    except ConfigError:
        pass
    path = tmp_path / "shiplift.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["release", "--version", "v1", "--config", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("shiplift: error: "), result.stderr
    assert not (tmp_path / ".shiplift").exists(), "nothing was touched: no ledger was even created"


# The strategy: a union by kind; each kind takes only its own keys ----------------------------


def test_the_strategy_is_one_model_per_kind_and_replace_by_default() -> None:
    from shiplift.config import CanaryStrategy, ReplaceStrategy

    config = parse_config(CONTRACT)
    assert isinstance(config.environment("dev").strategy, ReplaceStrategy)
    assert isinstance(config.environment("prod").strategy, CanaryStrategy)
    doc = yaml.safe_load(CONTRACT)
    del doc["environments"][0]["strategy"]
    dev = parse_config(yaml.safe_dump(doc)).environment("dev").strategy
    assert isinstance(dev, ReplaceStrategy) and dev.steps == [] and dev.match is None
    assert (dev.sticky, dev.preview_port) == (False, None)


@pytest.mark.parametrize(
    ("strategy", "key", "message"),
    [
        (
            {"kind": "rolling"},
            "strategy.kind",
            "Input should be 'replace', 'blue_green', 'canary' or 'ab' (found 'rolling')",
        ),
        ({"kind": "replace", "steps": [{"set_weight": 5}]}, "strategy", "replace takes no steps"),
        (
            {"kind": "canary", "steps": [{"set_weight": 5}], "match": {"header": "X-Group", "value": "b"}},
            "strategy",
            "match is only for ab",
        ),
        (
            {"kind": "canary", "steps": [{"set_weight": 5}], "preview_port": 9000},
            "strategy",
            "preview_port is only for blue_green",
        ),
        (
            {
                "kind": "ab",
                "steps": [{"pause": {"duration_seconds": 1}}],
                "match": {"header": "X", "value": "b"},
                "sticky": True,
            },
            "strategy",
            "sticky is only for canary",
        ),
        (
            {"kind": "canary", "steps": [{"set_weight": 5}], "scale_down_delay_seconds": 5},
            "strategy",
            "scale_down_delay_seconds is only for blue_green",
        ),
        ({"kind": "blue_green", "preview_port": 9000, "colour": 1}, "strategy.colour", "unknown key"),
        (
            {"kind": "blue_green", "preview_port": 9000, "steps": [{"wait": 1}]},
            "strategy.steps[0]",
            "a step is one of set_weight, pause or analysis",
        ),
        ("canary", "strategy", "Input should be a valid dictionary (found a string)"),
    ],
)
def test_a_strategy_takes_only_the_keys_of_its_kind(strategy: Any, key: str, message: str) -> None:
    doc = yaml.safe_load(CONTRACT)
    doc["environments"][1]["strategy"] = strategy
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc, sort_keys=False))
    assert str(info.value).endswith(f": environments[1].{key}: {message}"), str(info.value)


def test_every_config_key_has_a_description() -> None:
    """The descriptions feed the README's configuration reference and ``--help``."""
    from pydantic import BaseModel

    import shiplift.config as config

    models = [
        m
        for m in vars(config).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == config.__name__
    ]
    assert len(models) > 20
    missing = [
        f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items() if not f.description
    ]
    assert not missing
