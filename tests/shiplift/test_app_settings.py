"""App settings per environment (env, secrets) and the app's port: config checks, the EXPOSE
rule, secret resolution, the change a redeploy records, and the Kubernetes manifests."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shiplift.config import parse_config
from shiplift.errors import ConfigError
from shiplift.images import exposed_port
from shiplift.model import ImageRef
from shiplift.settings import AppSettings, diff, resolve
from shiplift.targets.kubernetes import settings_secret, version_manifests

SECRET = "s3cr3t-value-never-shown"
IMAGE = ImageRef("127.0.0.1:5000/shop", "sha256:" + "a" * 64)


def config(**dev: Any) -> str:
    doc: dict[str, Any] = {
        "app": "shop",
        "image": {"repository": "127.0.0.1:5000/shop"},
        "health": {"path": "/healthz"},
        "environments": [{"name": "dev", "port": 18081, **dev}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    return message


def test_settings_parse_with_scalars_as_strings_and_container_port_unset() -> None:
    cfg = parse_config(
        config(
            env={"GREETING": "hi", "WORKERS": 3, "DEBUG": True, "EMPTY": None},
            secrets={"API_TOKEN": "env:SHOP_TOKEN", "DB_PASSWORD": "prefect-secret:shop-db"},
        )
    )
    dev = cfg.environments[0]
    assert dev.env == {"GREETING": "hi", "WORKERS": "3", "DEBUG": "true", "EMPTY": ""}
    assert dev.secrets == {"API_TOKEN": "env:SHOP_TOKEN", "DB_PASSWORD": "prefect-secret:shop-db"}
    assert cfg.container_port is None


@pytest.mark.parametrize(
    ("dev", "expected"),
    [
        ({"env": {"1ST": "x"}}, "environments[0].env.1ST: not an environment variable name"),
        ({"env": {"MY-VAR": "x"}}, "environments[0].env.MY-VAR: not an environment variable name"),
        ({"env": {"PORT": "9000"}}, "environments[0].env.PORT: set by shiplift itself"),
        ({"secrets": {"SHIPLIFT_ENV": "env:X"}}, "environments[0].secrets.SHIPLIFT_ENV: set by shiplift"),
        ({"secrets": {"TOKEN": "env:1X"}}, "environments[0].secrets.TOKEN: a secret is a reference"),
        ({"secrets": {"TOKEN": "secret:x"}}, "environments[0].secrets.TOKEN: a secret is a reference"),
        ({"env": {"A": "1"}, "secrets": {"A": "env:A"}}, "environments[0].secrets.A: is in env too"),
        (
            {"env": {"A": {"nested": 1}}},
            "environments[0].env.A: a setting is a string, number or boolean (found a mapping)",
        ),
        ({"envs": {"A": "1"}}, "environments[0].envs: unknown key"),
    ],
)
def test_bad_settings_are_refused_in_one_line_naming_the_key(dev: dict[str, Any], expected: str) -> None:
    assert expected in refused(config(**dev))


def test_a_secret_value_typed_in_the_config_is_never_echoed() -> None:
    message = refused(config(secrets={"API_TOKEN": SECRET}))
    assert SECRET not in message
    assert "env:VAR or prefect-secret:NAME" in message


def test_secrets_resolve_from_the_environment_and_a_block_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = parse_config(
        config(env={"A": "1"}, secrets={"T": "env:SHOP_TOKEN", "P": "prefect-secret:shop-db"})
    ).environments[0]
    monkeypatch.setenv("SHOP_TOKEN", SECRET)
    settings = resolve(dev, {"shop-db": "pw"}.__getitem__)
    assert settings.environment == {"A": "1", "T": SECRET, "P": "pw"}
    assert SECRET not in repr(settings)

    monkeypatch.delenv("SHOP_TOKEN")
    with pytest.raises(ConfigError, match=r"secrets\.T: the environment variable SHOP_TOKEN is not set"):
        resolve(dev, {"shop-db": "pw"}.__getitem__)
    monkeypatch.setenv("SHOP_TOKEN", SECRET)
    with pytest.raises(ConfigError, match=r"secrets\.P: cannot load the Prefect Secret block 'shop-db'"):
        resolve(dev, {}.__getitem__)


def test_a_change_names_keys_never_values() -> None:
    running = {"A": "1", "B": "2", "T": "old-" + SECRET}
    wanted = AppSettings({"A": "1", "C": "3"}, {"T": SECRET})
    change = diff(running, {"T"}, wanted)
    assert (change.added, change.removed, change.changed) == (("C",), ("B",), ("T",))
    assert change.describe() == "settings changed: +C, ~T (secret), -B"
    assert SECRET not in change.describe() and SECRET not in repr(change)
    assert not diff({"A": "1", "T": SECRET}, {"T"}, AppSettings({"A": "1"}, {"T": SECRET}))
    # the same name and value, moved from env to secrets: a change
    assert diff({"T": SECRET}, set(), AppSettings({}, {"T": SECRET})).changed == ("T",)


def test_the_port_is_the_images_single_expose() -> None:
    assert exposed_port({"8080/tcp": {}}, "img") == 8080
    assert exposed_port({"8080/tcp": {}, "53/udp": {}}, "img") == 8080
    for exposed, found in (({"80/tcp": {}, "443/tcp": {}}, "EXPOSEs 80, 443"), (None, "EXPOSEs no TCP port")):
        with pytest.raises(ConfigError) as info:
            exposed_port(exposed, "127.0.0.1:5000/shop@sha256:…")
        message = str(info.value)
        assert message.startswith("container_port: ") and found in message
        assert "set container_port in shiplift.yaml" in message and "\n" not in message


def test_kubernetes_manifests_reference_the_secret_and_never_hold_its_value() -> None:
    cfg = parse_config(
        config(
            target={"kind": "kubernetes", "namespace": "shop-dev"},
            port=30081,
            env={"GREETING": "hi"},
            secrets={"API_TOKEN": "env:SHOP_TOKEN"},
        )
    )
    dev = cfg.environments[0]
    deployment, service = version_manifests(cfg, dev, "v1", IMAGE, port=8000)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[:2] == [
        {"name": "GREETING", "value": "hi"},
        {
            "name": "API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "shop-v1-settings", "key": "API_TOKEN"}},
        },
    ]
    assert {"name": "PORT", "value": "8000"} in env
    assert SECRET not in yaml.safe_dump([deployment, service])

    secret = settings_secret(cfg, dev, "v1", AppSettings({"GREETING": "hi"}, {"API_TOKEN": SECRET}))
    assert secret is not None
    assert secret["metadata"]["name"] == "shop-v1-settings" and secret["metadata"]["namespace"] == "shop-dev"
    assert secret["stringData"] == {"API_TOKEN": SECRET}
    assert settings_secret(cfg, dev, "v1", AppSettings({"GREETING": "hi"})) is None

    # a changed secret value rolls the pods: the template's revision annotation changes
    rolled, _ = version_manifests(cfg, dev, "v1", IMAGE, revision=2, port=8000)
    assert rolled["spec"]["template"]["metadata"]["annotations"]["shiplift.io/settings-revision"] == "2"
