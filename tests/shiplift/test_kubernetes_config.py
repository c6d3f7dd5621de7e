"""The Kubernetes keys of the config, what they refuse, and the checks before anything is applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shiplift.config import parse_config
from shiplift.errors import ConfigError, InputError
from shiplift.kube import preflight

BASE: dict[str, Any] = {
    "app": "shop",
    "image": {"repository": "127.0.0.1:5000/shop"},
    "health": {"path": "/healthz"},
    "environments": [
        {"name": "dev", "port": 18081},
        {
            "name": "prod",
            "target": {"kind": "kubernetes", "namespace": "shop-prod", "replicas": 3},
            "port": 30084,
            "strategy": {"kind": "canary", "steps": [{"set_weight": 34}]},
        },
    ],
}


def config_with(**prod: Any) -> str:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["environments"][1].update(prod)
    return yaml.safe_dump(doc, sort_keys=False)


def test_a_mixed_config_parses_with_the_service_router_by_default() -> None:
    config = parse_config(config_with())
    dev, prod = config.environments
    assert (dev.target.kind, dev.router_kind) == ("docker", "traefik")
    assert (prod.target.kind, prod.target.namespace, prod.target.replicas, prod.router_kind) == (
        "kubernetes",
        "shop-prod",
        3,
        "service",
    )


@pytest.mark.parametrize(
    ("prod", "message"),
    [
        ({"target": {"kind": "kubernetes"}}, "kubernetes needs namespace"),
        ({"target": {"kind": "kubernetes", "namespace": "Shop_Prod"}}, "kubernetes needs namespace"),
        ({"target": {"kind": "docker", "namespace": "x"}}, "namespace: only for a kubernetes target"),
        ({"target": {"kind": "kubernetes", "namespace": "p", "cluster": "x"}}, "cluster"),
        ({"target": {"kind": "docker", "resources": {"limits": {"memory": "1Gi"}}}}, "resources: only for"),
        (
            {"target": {"kind": "kubernetes", "namespace": "p", "resources": {"limits": {"memory": "1 GB"}}}},
            "'1 GB' is not a Kubernetes quantity",
        ),
        ({"port": 8080}, "8080: the stable Service's NodePort is 30000-32767"),
        ({"router": {"kind": "traefik"}}, "a kubernetes target takes router service or gateway_api"),
        ({"router": {"kind": "gateway_api"}}, "gateway_api needs gateway"),
        ({"router": {"kind": "service", "hostnames": ["a"]}}, "hostnames: only for a gateway_api router"),
        (
            {
                "strategy": {
                    "kind": "ab",
                    "match": {"header": "X-B", "value": "1"},
                    "steps": [{"pause": {"duration_seconds": 1}}],
                }
            },
            "ab needs a router that matches headers",
        ),
        (
            {"strategy": {"kind": "canary", "steps": [{"analysis": {"count": 1}}]}},
            "the traefik provider reads Traefik's metrics",
        ),
    ],
)
def test_what_a_kubernetes_environment_refuses_names_the_key(prod: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config_with(**prod))
    assert message in str(info.value) and "environments[1]" in str(info.value), str(info.value)


def test_a_missing_kubeconfig_or_an_api_server_that_does_not_answer_is_refused_before_anything(
    tmp_path: Path,
) -> None:
    missing = parse_config(
        config_with(target={"kind": "kubernetes", "namespace": "p", "kubeconfig": str(tmp_path / "nope")})
    ).environments[1]
    with pytest.raises(InputError, match=r"target.kubeconfig: .*nope: no such file"):
        preflight(missing)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t0ken-never-shown"}}],
                "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "here",
            }
        )
    )
    env = parse_config(
        config_with(target={"kind": "kubernetes", "namespace": "p", "kubeconfig": str(kubeconfig)})
    ).environments[1]
    with pytest.raises(InputError, match=r"the API server https://127.0.0.1:1 does not answer") as info:
        preflight(env)
    assert "t0ken" not in str(info.value)
    wrong_context = parse_config(
        config_with(
            target={"kind": "kubernetes", "namespace": "p", "kubeconfig": str(kubeconfig), "context": "there"}
        )
    ).environments[1]
    with pytest.raises(InputError, match=r"target.context: .*there"):
        preflight(wrong_context)


def test_the_cli_refuses_an_unreachable_cluster_with_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "shiplift.yaml"
    config.write_text(
        config_with(target={"kind": "kubernetes", "namespace": "p", "kubeconfig": str(tmp_path / "x")})
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shiplift",
            "promote",
            "--version",
            "v1",
            "--to",
            "prod",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "target.kubeconfig" in lines[0] and not result.stdout, result.stderr


def test_resources_reach_the_app_container_as_written() -> None:
    from shiplift.model import ImageRef
    from shiplift.targets.kubernetes import version_manifests

    resources = {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    target = {"kind": "kubernetes", "namespace": "shop-prod", "resources": resources}
    config = parse_config(config_with(target=target))
    image = ImageRef(repository="127.0.0.1:5000/shop", digest="sha256:" + "a" * 64)
    deployment = version_manifests(config, config.environments[1], "v1", image, port=8000)[0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == resources


def test_two_environments_in_one_namespace_are_refused() -> None:
    doc = yaml.safe_load(config_with())
    staging = {**doc["environments"][1], "name": "staging", "port": 30085}
    doc["environments"].insert(1, staging)
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc))
    assert "namespace shop-prod is already used by environment 'staging'" in str(info.value)
    staging["target"] = {**staging["target"], "namespace": "shop-staging"}
    assert [e.name for e in parse_config(yaml.safe_dump(doc)).environments] == ["dev", "staging", "prod"]
