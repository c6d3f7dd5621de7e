"""Kubernetes access for the ``kubernetes`` target and its routers: the API client, names, checks.

One ``ApiClient`` per environment, from its ``target.kubeconfig`` and ``target.context``
(default: ``$KUBECONFIG``, then ``~/.kube/config``, else the in-cluster service account).
Objects are applied with server-side apply, field manager ``shiplift``. A version's Deployment
and Service are both named ``<app>-<version>`` (a DNS label), labelled
``app.kubernetes.io/name``, ``app.kubernetes.io/version`` and ``shiplift.io/environment``;
the digest is an annotation (a label cannot hold ``sha256:…``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiplift.errors import InputError
from shiplift.model import slug

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from shiplift.config import EnvironmentConfig

MANAGER = "shiplift"
NAME = "app.kubernetes.io/name"
VERSION = "app.kubernetes.io/version"
ENVIRONMENT = "shiplift.io/environment"
DIGEST = "shiplift.io/digest"
REPOSITORY = "shiplift.io/repository"
SETTINGS_REVISION = "shiplift.io/settings-revision"
"""Pod-template annotation: bumped when a secret setting's value changes, so the pods roll."""
OWN_ENV = frozenset({"SHIPLIFT_ENV", "SHIPLIFT_VERSION", "PORT"})
"""The environment variables shiplift sets itself (never settings)."""
REQUEST_TIMEOUT = 10


def version_name(app: str, version: str) -> str:
    """``<app>-<version>`` as a DNS label (at most 63 characters)."""
    return slug(f"{app}-{version}")[:63].rstrip("-")


def settings_name(version_name: str) -> str:
    """The Secret of a version's secret settings: ``<app>-<version>-settings`` (a DNS name)."""
    return f"{version_name}-settings"


def labels(app: str, env: str, version: str | None = None) -> dict[str, str]:
    out = {NAME: app, ENVIRONMENT: env}
    if version is not None:
        out[VERSION] = slug(version)[:63].strip("-.") or "x"
    return out


def selector(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


def api_client(env: EnvironmentConfig) -> ApiClient:
    """The API client of ``env``'s target; InputError (exit 2) when its kubeconfig or context is wrong."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    target = env.target
    where = f"environments[{env.name}].target"
    path = _kubeconfig(target.kubeconfig)
    try:
        if path is not None:
            made: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=target.context
            )
            return made
        if target.kubeconfig is not None:
            raise InputError(f"{where}.kubeconfig: {target.kubeconfig}: no such file")
        if target.context is not None:
            raise InputError(f"{where}.context: {target.context}: no kubeconfig found to take it from")
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except ConfigException as exc:
        text = " ".join(str(exc).split())
        key = "context" if target.context and target.context in text else "kubeconfig"
        raise InputError(f"{where}.{key}: {text[:200]}") from None


def _kubeconfig(configured: str | None) -> Path | None:
    if configured is not None:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    for candidate in (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0], "~/.kube/config"):
        if candidate and Path(candidate).expanduser().is_file():
            return Path(candidate).expanduser()
    return None


def preflight(env: EnvironmentConfig) -> None:
    """Refuse (InputError, exit 2), before anything is applied, an API server that does not answer
    or a namespace the credentials cannot deploy into."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = api_client(env)
    namespace = env.target.namespace
    assert namespace is not None  # the config requires it on kubernetes
    where = f"environments[{env.name}].target"
    try:
        client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
    except (HTTPError, OSError, ApiException) as exc:
        host = api.configuration.host
        raise InputError(f"{where}: the API server {host} does not answer: {api_reason(exc)}") from None
    review = client.AuthorizationV1Api(api)
    checks = [
        ("get", "", "namespaces"),
        ("patch", "apps", "deployments"),
        ("patch", "", "services"),
        ("delete", "apps", "deployments"),
    ]
    if env.secrets:  # the version's Secret of secret settings
        checks += [("get", "", "secrets"), ("patch", "", "secrets"), ("delete", "", "secrets")]
    for verb, group, resource in checks:
        attributes = client.V1ResourceAttributes(
            namespace=namespace, verb=verb, group=group, resource=resource, name=None
        )
        if resource == "namespaces":
            # as the API server sees GET /api/v1/namespaces/<ns>: a Role in <ns> may grant it
            attributes.name = namespace
        spec = client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        try:
            answer = review.create_self_subject_access_review(
                client.V1SelfSubjectAccessReview(spec=spec), _request_timeout=REQUEST_TIMEOUT
            )
            allowed = answer.status is not None and answer.status.allowed
        except ApiException as exc:
            why = api_reason(exc)
            raise InputError(f"{where}: cannot ask the API server what it allows: {why}") from None
        if not allowed:
            raise InputError(
                f"{where}.namespace: the credentials may not {verb} {resource} in {namespace} "
                "(see the Role in the README)"
            )
    try:
        client.CoreV1Api(api).read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise InputError(
                f"{where}.namespace: {namespace} does not exist (kubectl create namespace {namespace})"
            ) from None
        raise InputError(f"{where}.namespace: {namespace}: {api_reason(exc)}") from None


def api_reason(exc: Any) -> str:
    """One line for an API error: the server's own message when it sent one, else the reason."""
    import json

    body = getattr(exc, "body", None)
    message = None
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    reason = message or getattr(exc, "reason", None) or type(exc).__name__
    return " ".join(str(reason).split())[:200]


def deployment_version(deployment: Any) -> str:
    """The version label a Deployment runs (its ``SHIPLIFT_VERSION``; the version label is a slug)."""
    for container in deployment.spec.template.spec.containers:
        for var in container.env or []:
            if var.name == "SHIPLIFT_VERSION":
                return str(var.value)
    return str(deployment.metadata.labels.get(VERSION, "?"))
