"""Many apps on one host, and teardown (issue 17, points 1, 2 and 4).

- 60 app × environment pairs get their networks on one engine — each a /27 of
  ``docker.address_pool``, none overlapping another network — and teardown leaves nothing;
  Docker's default pools alone gave out at 28. A full pool is one line naming the setting.
- ``shiplift teardown`` on a real release: refused while a rollout waits and without ``--yes``
  off a terminal; then containers, router and network gone, history kept, ``status`` shows the
  environment torn down, and a release recreates it.
- The same on the local Kubernetes cluster: the app's Deployments and Services gone.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from shiplift.config import DEFAULT_ADDRESS_POOL, Config, parse_config
from shiplift.errors import ConfigError
from shiplift.ledger import open_ledger
from shiplift.model import Phase, resource_name
from shiplift.routers.traefik import ensure_traefik_image
from shiplift.targets.docker import DockerTarget
from shiplift.targets.networks import subnets_in_use
from tests.support.parts import Project, Registry, app_containers, make_project, remove_app

pytestmark = pytest.mark.real

POOL = ipaddress.IPv4Network(DEFAULT_ADDRESS_POOL)


def _config(app: str, envs: tuple[str, ...], docker: str = "") -> Config:
    lines = [f"  - {{name: {e}, target: {{kind: docker}}, port: {20000 + i}}}" for i, e in enumerate(envs)]
    text = (
        f"app: {app}\nimage: {{repository: 127.0.0.1:5000/{app}}}\nhealth: {{path: /healthz}}\n"
        "environments:\n" + "\n".join(lines) + "\n" + docker
    )
    return parse_config(text)


def _labelled(client: Any, apps: list[str]) -> tuple[list[str], list[str]]:
    """Names of the networks and containers any of ``apps`` still has."""
    nets = [
        n.name for n in client.networks.list() if (n.attrs.get("Labels") or {}).get("io.shiplift.app") in apps
    ]
    containers = [
        c.name
        for c in client.containers.list(all=True, filters={"label": "io.shiplift.app"})
        if c.labels.get("io.shiplift.app") in apps
    ]
    return nets, containers


def test_sixty_app_environment_pairs_fit_on_one_host_and_teardown_leaves_nothing(docker_engine: Any) -> None:
    from shiplift.dockerhost import client as docker_client

    client = docker_client()
    run = uuid.uuid4().hex[:6]
    envs = ("dev", "qa", "staging", "prod")
    apps = [f"n{run}{i:02d}" for i in range(15)]
    configs = [_config(a, envs) for a in apps]
    targets = [DockerTarget(client, config=c, env=e) for c in configs for e in c.environments]
    assert len(targets) == 60
    try:
        started = time.monotonic()
        # six at a time: releases on one host pick their subnets at the same moment
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda t: t.prepare(), targets))
        created = time.monotonic() - started
        networks = client.networks.list()
        ours = {n.name: n for n in networks if n.name in {t.network_name for t in targets}}
        assert len(ours) == 60, "one network per pair, none twice"
        mine = {name: subnets_in_use([n]) for name, n in ours.items()}
        assert all(len(s) == 1 and s[0].prefixlen == 27 and s[0].subnet_of(POOL) for s in mine.values()), mine
        theirs = subnets_in_use([n for n in networks if n.name not in ours])
        every = [s[0] for s in mine.values()] + theirs
        overlapping = [(a, b) for i, a in enumerate(every) for b in every[i + 1 :] if a.overlaps(b)]
        assert not overlapping, overlapping[:3]
        targets[0].prepare()  # again: the same network, nothing new
        assert [n.name for n in client.networks.list(names=[targets[0].network_name])] == [
            targets[0].network_name
        ]

        # a small container on every tenth pair, labelled as a version, on the pair's network
        image = ensure_traefik_image(client)

        def run_version(t: DockerTarget) -> None:
            client.containers.run(
                image,
                name=resource_name(t.config.app, t.env.name, "v1-000000000000"),
                detach=True,
                network=t.network_name,
                labels={
                    "io.shiplift.app": t.config.app,
                    "io.shiplift.env": t.env.name,
                    "io.shiplift.role": "app",
                },
            )

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(run_version, targets[::10]))
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            removed = list(pool.map(lambda t: t.teardown(), targets))
        torn = time.monotonic() - started
        assert all(f"network {t.network_name}" in r for t, r in zip(targets, removed, strict=True))
        assert sum(len(r) for r in removed) == 60 + 6, "60 networks and 6 containers"
        assert _labelled(client, apps) == ([], []), "nothing left"
        assert targets[0].teardown() == [], "a second teardown finds nothing, and says nothing"
        print(f"60 networks created in {created:.1f}s, torn down with 6 containers in {torn:.1f}s")
    finally:
        for app in apps:
            remove_app(app)

    # a full pool: one line naming the settings to change (the CLI exits 2 with it: ConfigError)
    small = f"docker: {{address_pool: 10.211.{int(run[:2], 16)}.0/26, subnet_size: 27}}\n"
    cfg = _config(f"f{run}", ("a", "b", "c"), small)
    full = [DockerTarget(client, config=cfg, env=e) for e in cfg.environments]
    try:
        full[0].prepare()
        full[1].prepare()
        with pytest.raises(ConfigError) as refused:
            full[2].prepare()
        assert "docker.address_pool: no free /27 subnet left in 10.211." in str(refused.value)
        assert "widen docker.address_pool, raise docker.subnet_size" in str(refused.value)
    finally:
        remove_app(f"f{run}")


@pytest.fixture
def dev(tmp_path: Path, registry: Registry, prefect_api: str) -> Iterator[Project]:
    """The example app with one environment, dev."""
    app = f"d{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("dev",))
    yield project
    remove_app(app)


def _router(app: str, env: str) -> Any | None:
    from shiplift.dockerhost import client

    try:
        return client().containers.get(resource_name(app, env, "router"))
    except NotFound:
        return None


def _network(app: str, env: str) -> ipaddress.IPv4Network | None:
    from shiplift.dockerhost import client

    found = [
        n
        for n in client().networks.list(names=[resource_name(app, env)])
        if n.name == resource_name(app, env)
    ]
    return subnets_in_use(found)[0] if found else None


def test_teardown_removes_the_environment_keeps_its_history_and_a_release_brings_it_back(
    dev: Project,
) -> None:
    dev.shiplift("release", "--version", "v1", check=True)
    assert dev.version_at("dev") == "v1"
    subnet = _network(dev.app, "dev")
    assert subnet is not None and subnet.subnet_of(POOL) and subnet.prefixlen == 27
    containers = sorted(c.name for c in app_containers(dev.app, "dev"))
    assert containers and _router(dev.app, "dev") is not None

    # a rollout waits for approval in dev: refused, one line, nothing changed
    run_id = dev.waiting_run("dev", "v2")
    refused = dev.shiplift("teardown", "--env", "dev", "--yes")
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.count("\n") == 1
        and "a rollout of v2 is in progress (AwaitingApproval" in refused.stderr
    )
    assert "shiplift abort --env dev" in refused.stderr
    assert sorted(c.name for c in app_containers(dev.app, "dev")) == containers
    assert dev.version_at("dev") == "v1" and _network(dev.app, "dev") == subnet
    ledger = open_ledger(dev.ledger_url())
    waiting = ledger.deployment_for_run(run_id)[0]
    ledger.finish(waiting.id, Phase.REJECTED, "rejected by the test")

    # no terminal to ask on and no --yes: refused
    unasked = dev.shiplift("teardown", "--env", "dev")
    assert unasked.returncode == 2 and unasked.stderr.count("\n") == 1, unasked.stderr
    assert "pass --yes to confirm" in unasked.stderr and dev.version_at("dev") == "v1"
    wrong = dev.shiplift("teardown", "--env", "dev", "--app", "other", "--yes")
    assert wrong.returncode == 2 and f"is the config of {dev.app}" in wrong.stderr

    done = dev.shiplift("teardown", "--env", "dev", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["environment"], result["phase"], result["was_serving"]) == ("dev", "TornDown", "v1")
    assert set(containers) | {
        resource_name(dev.app, "dev", "router"),
        f"network {resource_name(dev.app, 'dev')}",
    } == set(result["removed"])
    assert app_containers(dev.app, "dev") == [] and _router(dev.app, "dev") is None, (
        "containers and router gone"
    )
    assert _network(dev.app, "dev") is None, "network gone"
    assert dev.version_at("dev") is None, "the endpoint is closed"
    status = dev.status()["environments"]["dev"]
    assert (status["phase"], status["version"], status["digest"], status["weights"]) == (
        "TornDown",
        None,
        None,
        {},
    )
    history = json.loads(dev.shiplift("history", "--env", "dev", "--json", check=True).stdout)
    rows = [(d["version"], d["kind"], d["phase"]) for d in history["deployments"]]
    assert rows[0] == ("v1", "teardown", "TornDown") and ("v1", "promote", "Succeeded") in rows, rows
    assert ("v2", "promote", "Rejected") in rows, "the history is kept"

    # a pool with no room: the release says which setting to change, exit 2
    doc = dev.config()
    from shiplift.dockerhost import client

    bridge = subnets_in_use([client().networks.get("bridge")])[0]
    dev.write_config({**doc, "docker": {"address_pool": str(bridge), "subnet_size": bridge.prefixlen}})
    full = dev.shiplift("release", "--version", "v1")
    assert full.returncode == 2, full.stderr
    assert full.stderr.strip().splitlines()[-1].startswith("shiplift: error: docker.address_pool: no free")

    dev.write_config(doc)
    again = dev.shiplift("release", "--version", "v1")
    assert again.returncode == 0, again.stderr
    assert dev.version_at("dev") == "v1" and _router(dev.app, "dev") is not None
    assert (subnet := _network(dev.app, "dev")) is not None and subnet.subnet_of(POOL)
    assert dev.status()["environments"]["dev"]["phase"] == "Succeeded"


@pytest.mark.kubernetes
def test_teardown_on_kubernetes_removes_the_apps_deployments_and_services(
    tmp_path: Path, registry: Registry, prefect_api: str, kube_cluster: Any
) -> None:
    """The target and router make a version's Deployment and Service and the stable Service
    (an image that is never pulled: nothing has to run to be removed); teardown removes them."""
    from kubernetes import client

    from shiplift.config import load_config
    from shiplift.kube import labels, selector
    from shiplift.model import ImageRef
    from shiplift.routers import router_for
    from shiplift.targets import target_for

    app = f"k{uuid.uuid4().hex[:7]}"
    project = make_project(tmp_path, app, registry.address, envs=("staging",))
    namespace = f"{app}-staging"
    core, apps = client.CoreV1Api(kube_cluster.api()), client.AppsV1Api(kube_cluster.api())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        doc = project.config()
        doc["environments"][0]["target"] = {
            "kind": "kubernetes",
            "namespace": namespace,
            "kubeconfig": str(kube_cluster.kubeconfig),
        }
        doc["environments"][0]["port"] = 30000 + int(uuid.uuid4().hex[:4], 16) % 2700
        project.write_config(doc)
        cfg = load_config(project.config_path)
        env = cfg.environment("staging")
        image = ImageRef(f"{registry.address}/{app}", "sha256:" + "1" * 64)
        target_for(cfg, env).start("v1", image)
        router_for(cfg, env).reconcile()
        mine = selector(labels(app, "staging"))
        assert len(apps.list_namespaced_deployment(namespace, label_selector=mine).items) == 1
        assert len(core.list_namespaced_service(namespace, label_selector=mine).items) == 2

        done = project.shiplift("teardown", "--env", "staging", "--yes")
        assert done.returncode == 0, done.stderr
        assert f"staging of {app} torn down" in done.stdout
        assert apps.list_namespaced_deployment(namespace, label_selector=mine).items == []
        assert core.list_namespaced_service(namespace).items == []
        assert project.status()["environments"]["staging"]["phase"] == "TornDown"
    finally:
        core.delete_namespace(namespace)


def test_the_ledger_records_a_teardown_and_gitops_forgets_the_environment(tmp_path: Path) -> None:
    """No Docker: the ledger's record (history kept, environment serving nothing, TornDown), the
    refusal while a deployment is unfinished, and the environment's file removed from git."""
    import subprocess

    from shiplift import teardown
    from shiplift.errors import InputError
    from shiplift.gitops import IN_GIT, read_desired, record_environment
    from shiplift.ledger import EnvironmentUpdate

    bare = tmp_path / "envs.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    cfg = _config("hello", ("dev",), f'gitops: {{repo: "file://{bare}"}}\n').model_copy(
        update={"base_dir": str(tmp_path)}
    )
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    digest = "sha256:" + "1" * 64

    def deploy(version: str) -> int:
        dep = ledger.start_deployment(
            app="hello", environment="dev", version=version, digest=digest, kind="promote",
            strategy="replace", previous_version=None, previous_digest=None, run_id=None,
        )  # fmt: skip
        return dep.id

    first = deploy("v1")
    with pytest.raises(InputError, match=r"a rollout of v1 is in progress \(Pending, step 0\)"):
        teardown.refuse_in_progress(ledger, "hello", "dev")
    ledger.finish(
        first, Phase.SUCCEEDED, "done", environment=EnvironmentUpdate(Phase.SUCCEEDED, ("v1", digest))
    )
    teardown.refuse_in_progress(ledger, "hello", "dev")
    assert record_environment(cfg, ledger, "dev", kind="promote", run_id=None) is None
    assert read_desired(cfg, cfg.environments)["dev"] is not None

    dep = teardown.record(
        ledger, "hello", "dev", strategy="replace", removed=["router", "network x"], by="carol", run_id=None
    )
    assert (dep.kind, dep.version, dep.phase, dep.reason) == (
        "teardown",
        "v1",
        Phase.TORN_DOWN,
        "torn down by carol",
    )
    state = ledger.environment("hello", "dev")
    assert state is not None and (state.version, state.digest, state.weights, state.phase) == (
        None,
        None,
        {},
        Phase.TORN_DOWN,
    )
    assert [d.phase for d in ledger.history("hello", "dev")] == [Phase.TORN_DOWN, Phase.SUCCEEDED]
    assert ledger.unfinished_all("hello", "dev") == [], "a later release finds nothing in progress"

    from shiplift.gitops import forget_environment

    assert forget_environment(cfg, ledger, "dev", dep, run_id="run-9", by="carol") is None
    assert read_desired(cfg, cfg.environments)["dev"] is None, "sync will not bring dev back"
    assert any(text.startswith(IN_GIT) for *_, text in ledger.events(dep.id))
    log = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "-1", "--format=%s%n%b"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.startswith("dev: tear down hello") and "by: carol" in log
    assert forget_environment(cfg, ledger, "dev", dep, run_id=None, by=None) is None, (
        "already gone: no commit"
    )


def test_free_subnets_skip_every_range_another_network_overlaps() -> None:
    from shiplift.targets.networks import free_subnets

    net = ipaddress.IPv4Network
    pool = net("10.210.0.0/24")
    taken = [
        net("10.210.0.0/27"),
        net("10.210.0.64/26"),
        net("10.210.0.200/32"),
        net("172.17.0.0/16"),
        net("10.0.0.0/8"),
    ]
    assert free_subnets(pool, 27, taken[:4]) == [
        net("10.210.0.32/27"),
        net("10.210.0.128/27"),
        net("10.210.0.160/27"),
        net("10.210.0.224/27"),
    ]
    assert free_subnets(pool, 27, taken) == [], "a wider network over the whole pool"
    assert len(free_subnets(net(DEFAULT_ADDRESS_POOL), 27, [])) == 2048
