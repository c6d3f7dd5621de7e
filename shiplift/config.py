"""shiplift.yaml: pydantic models and :func:`load_config`.

Every error is one line naming the file, the line where it is known, and the key::

    shiplift.yaml:14: environments[1].port: port 18081 is already used by environment 'dev'

(the YAML reading and that line: :mod:`shiplift.configfile`). An environment's strategy is one
model per kind (:data:`StrategyConfig`, a union by ``kind``, ``replace`` by default).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from shiplift.configfile import KeyedError, format_error, load_yaml, short, type_name
from shiplift.errors import ConfigError

NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?!-))*")
"""App, environment and database names: no ``--`` and no trailing ``-``, so that the ``--`` that
joins them into resource names (:func:`shiplift.model.resource_name`) is never ambiguous."""
NAME_MAX = 40
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^(?:(?P<host>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?{_COMPONENT}(?:/{_COMPONENT})*$")
TARGET_KINDS = ("docker", "kubernetes")
ROUTER_KINDS = {"docker": ("traefik",), "kubernetes": ("service", "gateway_api")}
"""The router kinds of each target kind; the first is the default."""
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _check_name(value: str) -> str:
    """App, environment and database names: lower-case letters, digits and single '-'."""
    if not NAME.fullmatch(value) or value.endswith("-") or len(value) > NAME_MAX:
        raise ValueError(
            f"{value!r} must start with a lower-case letter, then lower-case letters, digits and "
            f"single '-' (not '--', not at the end), at most {NAME_MAX}"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


DAY = 86400.0
HOUR = 3600.0


class SourceConfig(_Model):
    """Where a served release fetches the commit it builds (see :mod:`shiplift.source`)."""

    git: str = Field(
        description="Git repository URL (https, ssh, file://) or a path relative to shiplift.yaml; "
        "image.context is then relative to its top directory."
    )
    ref: str = Field("HEAD", description="Branch, tag or commit built when the release names no git sha.")

    @field_validator("git", "ref")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip() or value.startswith("-"):
            raise ValueError(f"{value!r} must be a non-empty value not starting with '-'")
        return value


class ImageConfig(_Model):
    """How the app's image is built, and the repository it is pushed to."""

    source: SourceConfig | None = Field(
        None,
        description="Build a served release from a clean checkout of this git repository "
        "(default: the repository shiplift.yaml is in).",
    )
    context: str = Field(
        ".",
        description="Build context, relative to shiplift.yaml (with source: to the top of that repository).",
    )
    dockerfile: str = Field("Dockerfile", description="Dockerfile, relative to the context.")
    repository: str = Field(description="Registry repository without tag, e.g. 127.0.0.1:5000/hello.")
    build_args: dict[str, str] = Field(
        default_factory=dict, description="Build arguments, after shiplift's own VERSION and GIT_SHA."
    )
    offline_base_packages: list[str] = Field(
        default_factory=lambda: ["python3"],
        description="Debian packages of the local base image made when FROM cannot be pulled.",
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if ":" in value.rsplit("/", 1)[-1] or "@" in value:
            raise ValueError(f"{value!r} must be a repository without tag or digest")
        if not REPOSITORY.match(value):
            raise ValueError(
                f"{value!r} is not a valid image repository (lower-case path, optional registry host)"
            )
        return value

    @field_validator("build_args", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value


class HealthConfig(_Model):
    path: str = Field(description="HTTP path that answers 200 when the app is healthy.")
    timeout_seconds: float = Field(
        60, gt=0, le=HOUR, description="How long a new version may take to turn healthy (at most 1 h)."
    )
    interval_seconds: float = Field(0.25, gt=0, le=60, description="Pause between health probes.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value


QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
"""A Kubernetes resource quantity: 500m, 0.5, 64Mi, 1G."""


class ResourceAmounts(_Model):
    cpu: str | None = Field(None, description="CPU, e.g. 250m or 1.")
    memory: str | None = Field(None, description="Memory, e.g. 128Mi or 1Gi.")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> str | None:
        if value is None:
            return None
        text = str(value)
        if not QUANTITY.fullmatch(text):
            raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 250m, 1, 128Mi, 1Gi)")
        return text


class KubeResources(_Model):
    requests: ResourceAmounts | None = Field(None, description="What the scheduler reserves for a pod.")
    limits: ResourceAmounts | None = Field(
        None, description="The most a pod may use (over the memory limit, it is OOMKilled)."
    )


class TargetConfig(_Model):
    kind: str = Field(description="Where the environment runs: docker or kubernetes.")
    namespace: str | None = Field(None, description="kubernetes (required): the namespace to deploy into.")
    context: str | None = Field(
        None, description="kubernetes: the kubeconfig context (default: the kubeconfig's current one)."
    )
    kubeconfig: str | None = Field(
        None,
        description="kubernetes: the kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
    )
    replicas: int = Field(1, ge=1, le=100, description="kubernetes: pods per version (docker runs one).")
    resources: KubeResources | None = Field(
        None, description="kubernetes: the app container's requests and limits (cpu, memory)."
    )
    host: str | None = Field(
        None,
        description="docker: the environment's Docker engine, unix:///path, tcp://host:port or "
        "ssh://[user@]host (default: $DOCKER_HOST, else the local socket).",
    )
    tls_verify: bool | None = Field(
        None, description="docker, tcp:// host: TLS with verification (default: $DOCKER_TLS_VERIFY set)."
    )
    cert_path: str | None = Field(
        None,
        description="docker, tcp:// host with TLS: directory of ca.pem, cert.pem, key.pem "
        "(default: $DOCKER_CERT_PATH, else ~/.docker).",
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {value!r} (known: {', '.join(TARGET_KINDS)})")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        from shiplift.dockerhost import check_url

        return None if value is None else check_url(value)

    @model_validator(mode="after")
    def _fits(self) -> TargetConfig:
        if self.kind == "kubernetes":
            if self.namespace is None or not DNS_LABEL.fullmatch(self.namespace):
                raise ValueError("kubernetes needs namespace: a DNS label (lower-case letters, digits, '-')")
            docker_only = ", ".join(
                k for k in ("host", "tls_verify", "cert_path") if getattr(self, k) is not None
            )
            if docker_only:
                raise ValueError(f"{docker_only}: only for a docker target (this one is kubernetes)")
            return self
        tls = [k for k in ("tls_verify", "cert_path") if getattr(self, k) is not None]
        if tls and not (self.host or "").startswith("tcp://"):
            raise ValueError(f"{', '.join(tls)}: only with a tcp:// host")
        given = [
            k for k in ("namespace", "context", "kubeconfig", "resources") if getattr(self, k) is not None
        ]
        if self.replicas != 1:
            given.append("replicas")
        if given:
            raise ValueError(f"{', '.join(given)}: only for a kubernetes target (this one is {self.kind})")
        return self


class RouterConfig(_Model):
    """What moves an environment's traffic between versions."""

    kind: Literal["traefik", "service", "gateway_api"] = Field(
        description="traefik (docker), service or gateway_api (kubernetes; default service)."
    )
    gateway: str | None = Field(None, description="gateway_api (required): the Gateway to attach to.")
    namespace: str | None = Field(None, description="gateway_api: the Gateway's namespace (default: app's).")
    hostnames: list[str] = Field(default_factory=list, description="gateway_api: the route's hostnames.")

    @model_validator(mode="after")
    def _fits(self) -> RouterConfig:
        if self.kind == "gateway_api" and not self.gateway:
            raise ValueError("gateway_api needs gateway: the name of the Gateway the route attaches to")
        if self.kind != "gateway_api":
            given = [k for k in ("gateway", "namespace") if getattr(self, k) is not None]
            if self.hostnames:
                given.append("hostnames")
            if given:
                raise ValueError(f"{', '.join(given)}: only for a gateway_api router (this is {self.kind})")
        return self


class ProviderConfig(_Model):
    """Where an analysis step's measurements come from."""

    kind: Literal["traefik", "prometheus", "http"] = Field(
        "traefik", description="traefik (the router's own metrics), prometheus or http."
    )
    address: str | None = Field(None, description="prometheus: the server, e.g. http://127.0.0.1:9090.")
    requests_query: str | None = Field(
        None, description="prometheus: requests to the version over the interval ({version}, {interval})."
    )
    failed_query: str | None = Field(None, description="prometheus: failed requests over the interval.")
    p95_query: str | None = Field(None, description="prometheus: p95 latency in seconds over the interval.")
    path: str = Field("/", description="http: path probed on the new version directly.")
    probes: int = Field(10, ge=1, le=1000, description="http: probes per interval.")
    expect_status: int = Field(200, ge=100, le=599, description="http: the status a probe must get.")

    @model_validator(mode="after")
    def _complete(self) -> ProviderConfig:
        if self.kind == "prometheus":
            missing = [k for k in ("address", "requests_query") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a prometheus provider needs {' and '.join(missing)}")
        if self.kind != "prometheus" and self.address is not None:
            raise ValueError(f"address is only for a prometheus provider (this one is {self.kind})")
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        return self


class AnalysisConfig(_Model):
    interval_seconds: float = Field(5, gt=0, le=HOUR, description="Length of one measurement.")
    count: int = Field(3, ge=1, le=1000, description="Measurements taken; all must succeed.")
    success_rate_min: float | None = Field(None, ge=0, le=1, description="Lowest share of non-5xx answers.")
    p95_latency_ms_max: float | None = Field(None, gt=0, description="Highest p95 latency, in milliseconds.")
    failure_limit: int = Field(1, ge=0, description="Failed measurements that abort (at least one).")
    consecutive_error_limit: int = Field(
        4, ge=1, description="Measurements in a row that could not be taken."
    )
    provider: ProviderConfig = Field(
        default_factory=ProviderConfig, description="Where the measurements come from (default traefik)."
    )


class PauseConfig(_Model):
    duration_seconds: float | None = Field(
        None, ge=0, le=7 * DAY, description="Wait this long (at most 7 days)."
    )
    until_approved: bool = Field(False, description="Wait for a person's decision, like an approval gate.")

    @model_validator(mode="after")
    def _one(self) -> PauseConfig:
        if (self.duration_seconds is None) == (not self.until_approved):
            raise ValueError("a pause has either duration_seconds or until_approved: true")
        return self


class SetWeightStep(_Model):
    set_weight: int = Field(ge=0, le=100, description="Percent of traffic on the new version, 0-100.")


class PauseStep(_Model):
    pause: PauseConfig = Field(description="duration_seconds: N, or until_approved: true.")


class AnalysisStep(_Model):
    analysis: AnalysisConfig = Field(description="Measure the new version; abort if it fails.")


STEP_TAGS = {"set_weight": "SetWeightStep", "pause": "PauseStep", "analysis": "AnalysisStep"}
"""A step's key, and the tag of its member of the :data:`Step` union (its class name: the error
formatter leaves capitalised tags out of the key it shows)."""


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in STEP_TAGS if k in value]
        return STEP_TAGS[keys[0]] if len(keys) == 1 else None
    if isinstance(value, SetWeightStep | PauseStep | AnalysisStep):
        return type(value).__name__
    return None


Step = Annotated[
    Annotated[SetWeightStep, Tag("SetWeightStep")]
    | Annotated[PauseStep, Tag("PauseStep")]
    | Annotated[AnalysisStep, Tag("AnalysisStep")],
    Discriminator(
        _step_kind,
        custom_error_type="step",
        custom_error_message="a step is one of set_weight, pause or analysis",
    ),
]


TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 token); a cookie name is a token too (RFC 6265)."""
_MATCH_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


class MatchConfig(_Model):
    header: str | None = Field(None, description="ab: an HTTP header name (RFC 9110 token).")
    cookie: str | None = Field(None, description="ab: a cookie name (RFC 6265 token).")
    value: str = Field(
        description="ab: the exact value that sends a request to the new version (printable ASCII, no "
        "backquote or backslash; a cookie's value: no space, double quote, comma or semicolon)."
    )

    @field_validator("header", "cookie")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and (not TOKEN.fullmatch(value) or "`" in value):
            raise ValueError(
                f"{short(value)} is not a header or cookie name: letters, digits and !#$%&'*+.^_|~- only"
            )
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if not _MATCH_VALUE.fullmatch(value) or "`" in value or "\\" in value:
            raise ValueError(
                "value must be printable ASCII without backquotes, backslashes, control characters "
                "or leading, trailing or double spaces"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> MatchConfig:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("match has exactly one of header or cookie")
        if self.cookie is not None and any(c in self.value for c in ' ",;'):
            raise ValueError("a cookie's value may not hold spaces, double quotes, commas or semicolons")
        return self


_ONLY_FOR = {
    "match": "match is only for ab",
    "preview_port": "preview_port is only for blue_green",
    "sticky": "sticky is only for canary",
    "scale_down_delay_seconds": "scale_down_delay_seconds is only for blue_green",
}
"""The keys only one strategy kind has, and the error when another kind's config sets one."""


def _others(*own: str) -> dict[str, str]:
    return {key: message for key, message in _ONLY_FOR.items() if key not in own}


def _pause_and_analysis_only(kind: str, steps: list[Step]) -> None:
    if any(isinstance(s, SetWeightStep) for s in steps):
        raise ValueError(f"{kind} steps are pause and analysis only (set_weight is for canary)")


class _Strategy(_Model):
    """What the strategy kinds share: a key of another kind is refused by name.

    Each kind also answers, read-only, for the keys it does not have (``steps`` is empty,
    ``match`` and ``preview_port`` are ``None``, ``sticky`` is false), so that code may read
    ``env.strategy.match`` whatever the kind.
    """

    FOREIGN: ClassVar[dict[str, str]] = {}
    """Keys of other kinds, and the error that names the kind they belong to."""

    @model_validator(mode="before")
    @classmethod
    def _foreign_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, message in cls.FOREIGN.items():
            value = data.get(key)
            if not (value is None or value is False or value == []):
                raise ValueError(message)
        # null, false and [] say "none", as they did when one model held every kind's keys
        return {key: value for key, value in data.items() if key not in cls.FOREIGN}


class ReplaceStrategy(_Strategy):
    """Start the new version, wait until it is healthy, switch all traffic, stop the old one."""

    FOREIGN = {"steps": "replace takes no steps", **_others()}
    kind: Literal["replace"] = Field("replace", description="replace: all traffic at once once healthy.")

    @property
    def steps(self) -> list[Step]:
        return []

    @property
    def match(self) -> MatchConfig | None:
        return None

    @property
    def sticky(self) -> bool:
        return False

    @property
    def preview_port(self) -> int | None:
        return None


class CanaryStrategy(_Strategy):
    """Shift traffic to the new version by weight, step by step, with pauses and analyses."""

    FOREIGN = _others("sticky")
    kind: Literal["canary"] = Field("canary", description="canary: traffic shifted by weight, step by step.")
    steps: list[Step] = Field(
        default_factory=list, description="canary (required): set_weight, pause, analysis, in order."
    )
    sticky: bool = Field(False, description="canary: keep a client on the version it got first (a cookie).")

    @model_validator(mode="after")
    def _has_steps(self) -> CanaryStrategy:
        if not self.steps:
            raise ValueError("canary needs steps (set_weight, pause, analysis)")
        return self

    @property
    def match(self) -> MatchConfig | None:
        return None

    @property
    def preview_port(self) -> int | None:
        return None


class AbStrategy(_Strategy):
    """Send the requests that match a header or cookie to the new version, the rest to the old."""

    FOREIGN = _others("match")
    kind: Literal["ab"] = Field("ab", description="ab: requests that match go to the new version.")
    match: MatchConfig | None = Field(
        None, description="ab (required): which requests go to the new version (header or cookie, value)."
    )
    steps: list[Step] = Field(
        default_factory=list, description="ab (at least one): pause and analysis, in order."
    )

    @model_validator(mode="after")
    def _fits(self) -> AbStrategy:
        _pause_and_analysis_only(self.kind, self.steps)
        if self.match is None or not self.steps:
            raise ValueError(
                "ab needs match (header or cookie, and value) and at least one pause or analysis"
            )
        return self

    @property
    def sticky(self) -> bool:
        return False

    @property
    def preview_port(self) -> int | None:
        return None


class BlueGreenStrategy(_Strategy):
    """Preview the new version alone on its own port, then switch all traffic to it at once."""

    FOREIGN = _others("preview_port", "scale_down_delay_seconds")
    kind: Literal["blue_green"] = Field(
        "blue_green", description="blue_green: a preview, then all traffic at once."
    )
    preview_port: int | None = Field(
        None, ge=1, le=65535, description="blue_green (required): the new version's port before the switch."
    )
    steps: list[Step] = Field(default_factory=list, description="blue_green: pause and analysis, in order.")
    scale_down_delay_seconds: float = Field(
        30, ge=0, le=DAY, description="blue_green: keep the old one this long."
    )

    @model_validator(mode="after")
    def _fits(self) -> BlueGreenStrategy:
        _pause_and_analysis_only(self.kind, self.steps)
        if self.preview_port is None:
            raise ValueError("blue_green needs preview_port")
        return self

    @property
    def match(self) -> MatchConfig | None:
        return None

    @property
    def sticky(self) -> bool:
        return False


STRATEGY_TAGS = {
    "replace": "ReplaceStrategy",
    "canary": "CanaryStrategy",
    "ab": "AbStrategy",
    "blue_green": "BlueGreenStrategy",
}
"""A strategy's kind, and the tag of its member of :data:`StrategyConfig` (its class name)."""


def _strategy_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return STRATEGY_TAGS.get(value.get("kind", "replace"))
    if isinstance(value, _Strategy):
        return type(value).__name__
    return None


def _known_kind(value: Any) -> Any:
    """Name the key: an unknown kind is an error of ``strategy.kind``, not of the whole union."""
    if isinstance(value, dict):
        kind = value.get("kind", "replace")
        if not isinstance(kind, str) or kind not in STRATEGY_TAGS:
            raise KeyedError(
                ("kind",), f"Input should be 'replace', 'blue_green', 'canary' or 'ab' (found {short(kind)})"
            )
    elif not isinstance(value, _Strategy):
        raise ValueError(f"Input should be a valid dictionary (found {type_name(value)})")
    return value


StrategyConfig = Annotated[
    Annotated[ReplaceStrategy, Tag("ReplaceStrategy")]
    | Annotated[CanaryStrategy, Tag("CanaryStrategy")]
    | Annotated[AbStrategy, Tag("AbStrategy")]
    | Annotated[BlueGreenStrategy, Tag("BlueGreenStrategy")],
    Discriminator(_strategy_kind),
    BeforeValidator(_known_kind),
]
"""How an environment shifts traffic to a new version: one of the kinds, by ``kind`` (default replace)."""


class ApprovalConfig(_Model):
    approvers: list[str] = Field(min_length=1, description="Who may decide (one person however typed).")
    min_approvals: int = Field(1, ge=1, description="Distinct approvals needed; one rejection rejects.")
    forbid_self_approval: bool = Field(False, description="The release's author may not approve it.")
    timeout_seconds: float = Field(
        86400, gt=0, le=30 * DAY, description="A timeout rejects (at most 30 days)."
    )
    allow_auto_approve: bool = Field(
        False, description="Whether --auto-approve (or auto_approve through the API) may pass this gate."
    )

    @field_validator("approvers")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip():
                raise ValueError("an approver's name is empty")
        return value

    @model_validator(mode="after")
    def _enough(self) -> ApprovalConfig:
        people = {person(a) for a in self.approvers}
        if self.min_approvals > len(people):
            raise ValueError(f"min_approvals {self.min_approvals} exceeds the {len(people)} approvers")
        return self


def _setting_value(value: Any) -> Any:
    """A setting's YAML scalar as the string the app gets: ``true``, ``3``, ``""`` for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


class EnvironmentGitops(_Model):
    approve_by_commit: bool | None = Field(
        None, description="A commit that changes this environment passes its approval gate."
    )


class EnvironmentConfig(_Model):
    name: Name = Field(description="Level name (dev, qa, staging, prod…), unique; the same rule as app.")
    target: TargetConfig = Field(
        default_factory=lambda: TargetConfig(kind="docker"), description="Where it runs (default docker)."
    )
    port: int = Field(
        ge=1,
        le=65535,
        description="Stable endpoint port, unique per host (kubernetes with the service router: the "
        "stable Service's NodePort, 30000-32767).",
    )
    host: str = Field(
        "127.0.0.1", description="Address the stable endpoint binds to (kubernetes: a node's address)."
    )
    router: RouterConfig | None = Field(
        None, description="What moves the traffic (default: traefik on docker, service on kubernetes)."
    )
    strategy: StrategyConfig = Field(
        default_factory=ReplaceStrategy, description="How traffic moves to a new version (by kind)."
    )
    approval: ApprovalConfig | None = Field(
        None, description="The gate a promotion into this environment waits at (default: none)."
    )
    drain_seconds: float = Field(
        1.0, ge=0, le=HOUR, description="Wait after the switch before stopping the old version."
    )
    gitops: EnvironmentGitops | None = Field(
        None, description="This environment's GitOps settings (approve_by_commit)."
    )
    lock_timeout_seconds: float = Field(
        3600,
        gt=0,
        le=7 * DAY,
        description="How long a promotion waits for the environment's lock before it fails.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="The app's settings here: environment variables of its container, KEY: value "
        "(a change is a new deployment of the same image).",
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="The app's secret settings: KEY: env:VAR or prefect-secret:NAME (a Prefect Secret "
        "block), read at deploy time, never stored by shiplift.",
    )

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict | list):
                    why = f"a setting is a string, number or boolean (found {type_name(v)})"
                    raise KeyedError((str(k),), why)
            return {k: _setting_value(v) for k, v in value.items()}
        return value

    @field_validator("env", "secrets", mode="after")
    @classmethod
    def _setting_keys(cls, value: dict[str, str]) -> dict[str, str]:
        from shiplift.settings import check_key

        for key in value:
            if why := check_key(key):
                raise KeyedError((key,), why)
        return value

    @field_validator("secrets", mode="after")
    @classmethod
    def _secret_refs(cls, value: dict[str, str]) -> dict[str, str]:
        from shiplift.settings import check_reference

        for key, ref in value.items():
            if why := check_reference(ref):
                raise KeyedError((key,), why)
        return value

    @property
    def router_kind(self) -> str:
        """The router's kind: the configured one, else the target kind's default."""
        return self.router.kind if self.router is not None else ROUTER_KINDS[self.target.kind][0]

    @model_validator(mode="after")
    def _router_fits(self) -> EnvironmentConfig:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise KeyedError(("secrets", both[0]), "is in env too: a setting is plain or secret, not both")
        kinds = ROUTER_KINDS[self.target.kind]
        if self.router_kind not in kinds:
            raise KeyedError(
                ("router", "kind"),
                f"a {self.target.kind} target takes router {' or '.join(kinds)}, not {self.router_kind}",
            )
        if self.router_kind == "service" and self.strategy.kind == "ab":
            raise KeyedError(
                ("strategy", "kind"),
                "ab needs a router that matches headers; the service router cannot (use router: "
                "{kind: gateway_api, ...})",
            )
        if self.target.kind == "kubernetes":
            for step in self.strategy.steps:
                if isinstance(step, AnalysisStep) and step.analysis.provider.kind == "traefik":
                    raise KeyedError(
                        ("strategy", "steps"),
                        "the traefik provider reads Traefik's metrics, and a kubernetes environment has no "
                        "Traefik: give the analysis provider: {kind: prometheus, ...} or {kind: http}",
                    )
            if self.router_kind == "service" and not 30000 <= self.port <= 32767:
                raise KeyedError(("port",), f"{self.port}: the stable Service's NodePort is 30000-32767")
        return self


class RetentionConfig(_Model):
    """What ``prune`` keeps (the newest backup that passed a drill, always); all three 0 is refused."""

    daily: int = Field(7, ge=0, le=3660, description="Newest backup of each of the last N days with one.")
    weekly: int = Field(
        4, ge=0, le=520, description="Newest backup of each of the last N ISO weeks with one."
    )
    monthly: int = Field(6, ge=0, le=120, description="Newest backup of each of the last N months with one.")

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionConfig:
        if self.daily == self.weekly == self.monthly == 0:
            raise ValueError("a retention policy that keeps nothing (daily, weekly and monthly all 0)")
        return self


class CheckConfig(_Model):
    name: str = Field(description="Name of the check in the drill's report.")
    sql: str = Field(description="A query whose first column of the first row must be true (or non-zero).")


class StoreOptions(_Model):
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(None, description="S3 SSE.")
    kms_key_id: str | None = Field(None, description="S3 SSE-KMS key id (aws:kms).")
    object_lock_days: int | None = Field(
        None, ge=1, description="S3 Object Lock retention (compliance mode)."
    )
    part_size_mb: int = Field(8, ge=5, le=512, description="S3 multipart part size (memory holds one).")


def _cron(value: str | None) -> str | None:
    """Check a schedule with the validator of the scheduler that will run it: Prefect's.

    The one import of Prefect in the core, made here on purpose and only when a config has a
    schedule: what ``load_config`` accepts must be exactly what ``shiplift serve`` can schedule.
    Prefect's validator also takes a sixth (seconds) field, which its cron schedules do not
    mean as users expect; shiplift takes the five fields of crontab(5) only.
    """
    if value is None:
        return None
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(
            f"{value!r} has {len(fields)} fields; a schedule is a five-field cron "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        _validate_cron(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a cron expression Prefect can schedule ({exc})") from None
    return value


def _validate_cron(value: str) -> None:
    """Prefect's ``validate_cron_string``, without importing Prefect where its parser can be had alone.

    Importing anything from ``prefect`` costs about a second (``prefect/__init__`` and its
    settings), which every command that reads a config with a schedule would pay (issue 16: a
    fast CLI). Prefect's validator is its vendored croniter's ``is_valid`` and a refusal of the
    random and hashed fields (``R``, ``H``); that file imports no Prefect, so it is loaded from
    Prefect's package by its path. Should a Prefect release move it, Prefect's own function is
    imported, as before (tests/test_cli_fast.py checks the two agree).
    """
    parser = _prefect_croniter()
    if parser is None:
        from prefect._internal.schemas.validators import validate_cron_string

        validate_cron_string(value)
        return
    if not parser.is_valid(value):
        raise ValueError(f'Invalid cron string: "{value}"')
    if any(field.casefold() in ("r", "h") for field in value.split()):
        raise ValueError(f'Random and Hashed expressions are unsupported, received: "{value}"')


def _prefect_croniter() -> Any:
    """The ``croniter`` class of Prefect's vendored copy, loaded alone; ``None`` if it is not there."""
    import importlib.util
    import sys

    name = "shiplift._prefect_croniter"
    if name not in sys.modules:
        found = importlib.util.find_spec("prefect")  # finds the package; imports nothing
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / "_vendor" / "croniter" / "croniter.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if not path.is_file() or spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception:  # noqa: BLE001 - not loadable alone any more: Prefect's own function decides
            return None
        sys.modules[name] = module
    return getattr(sys.modules[name], "croniter", None)


class DatabaseConfig(_Model):
    name: Name = Field(description="Database name: --db NAME.")
    url: str = Field(description="SQLAlchemy URL, or env:VAR, or secret:BLOCK (a Prefect Secret block).")
    store: str = Field(description="file:///path or s3://bucket/prefix.")
    schedule: str | None = Field(
        None, description="Five-field cron (UTC) of the served backup deployment (default: none)."
    )
    drill_schedule: str | None = Field(
        None, description="Five-field cron (UTC) of the served restore drill (default: none)."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="What prune keeps.")
    store_options: StoreOptions = Field(default_factory=StoreOptions, description="Options of an S3 store.")
    key_secret: str | None = Field(
        None, description="Prefect Secret block with the key (else SHIPLIFT_BACKUP_KEY)."
    )
    checks: list[CheckConfig] = Field(default_factory=list, description="SQL checks a drill runs.")
    backup_before: list[str] | None = Field(
        None, description="Environments whose promotion takes a backup first (default: the last one)."
    )
    lock_wait_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="Seconds a backup waits for a table lock before it fails (lock_timeout, "
        "pg_dump --lock-wait-timeout).",
    )
    max_drill_age_hours: float | None = Field(
        None, gt=0, description="Refuse those promotions while the last passed drill is older."
    )
    approval: ApprovalConfig | None = Field(
        None, description="Who may approve a real restore (default: the last environment's approvers)."
    )

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if not (
            value.startswith("file:///") or re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", value)
        ):
            raise ValueError(f"{value!r}: a store is file:///absolute/path or s3://bucket[/prefix]")
        return value.rstrip("/")

    @field_validator("schedule", "drill_schedule")
    @classmethod
    def _schedules(cls, value: str | None) -> str | None:
        return _cron(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value.startswith(("env:", "secret:")):
            return value
        if not re.match(r"^(postgresql|postgres|sqlite)(\+\w+)?://", value):
            raise ValueError(
                "the url is a postgresql:// or sqlite:/// SQLAlchemy URL, env:VAR or secret:BLOCK"
            )
        return value


class RetryConfig(_Model):
    count: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries of a failed transient step (push, Docker, router) after the first try.",
    )
    backoff_seconds: float = Field(1.0, ge=0, description="First retry delay; doubles each retry.")
    jitter: float = Field(0.5, ge=0, le=1, description="Random jitter factor on each delay.")


class GitopsConfig(_Model):
    """The environment repository (see :mod:`shiplift.gitops`)."""

    repo: str = Field(
        description="Git URL of the environment repository (file://, ssh, https; an https token: token)."
    )
    branch: str = Field("main", description="The branch that says what runs.")
    path: str = Field("environments", description="Directory of <env>/<app>.yaml in the repository.")
    self_heal: bool = Field(True, description="sync restores what drifted (a stopped container, weights).")
    interval_seconds: float = Field(
        30, ge=5, le=DAY, description="How often the served sync deployment runs (shiplift serve)."
    )
    approve_by_commit: bool = Field(
        False,
        description="A commit that changes an environment passes its approval gate (default: the "
        "gate holds); an environment's gitops.approve_by_commit overrides it.",
    )
    token: str | None = Field(
        None,
        description="For an http(s):// repo: env:VAR, the environment variable that holds an access "
        "token. git gets it as HTTP basic auth (user token_username, the token as password) through "
        "its credential-helper protocol: never written to disk, a command line or the clone's "
        ".git/config. ssh and file:// repos leave it unset (ssh uses your keys and agent).",
    )
    token_username: str = Field(
        "x-access-token",
        description="The user name sent with token: x-access-token (GitHub), oauth2 (GitLab), "
        "x-token-auth (Bitbucket), or the token owner's name where the server wants it.",
    )

    @field_validator("repo", "branch", "path")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not value.strip() or value.startswith("-") or ".." in value.split("/"):
            raise ValueError(f"{short(value)} must be non-empty, not start with '-' nor contain '..'")
        return value.strip()

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None or re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value.strip()):
            return value and value.strip()
        # not echoed: it may be the token itself
        raise ValueError("must be env:VAR, an environment variable holding the token (never the token)")

    @field_validator("token_username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not re.fullmatch(r"[^\s:@/]+", value):
            raise ValueError(f"{short(value)} must be a user name: no spaces, ':', '@' nor '/'")
        return value

    @model_validator(mode="after")
    def _token_over_http(self) -> GitopsConfig:
        if self.token is not None and not re.match(r"^https?://", self.repo):
            why = "only for an https:// repo; ssh uses your keys and agent, file:// needs none"
            raise KeyedError(("token",), why)
        return self


class LedgerConfig(_Model):
    url: str | None = Field(
        None,
        description="postgresql://USER:PASSWORD@HOST:PORT/DB (a shared ledger), sqlite:///PATH "
        "(relative to the config) or env:VAR; default sqlite:///<config dir>/.shiplift/ledger.db. "
        "SHIPLIFT_LEDGER_URL overrides it.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value):
            return value
        if re.match(r"^(postgresql|postgres|sqlite)(\+\w+)?://", value):
            return value
        # never echo the value: a mistyped URL may hold a password
        raise ValueError(
            "the ledger url is postgresql://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH or env:VAR"
        )


DEFAULT_ADDRESS_POOL = "10.210.0.0/16"
"""Outside Docker's default pools (172.17.0.0/16-172.31.0.0/16, 192.168.0.0/16) and the local
cluster's service and pod ranges (10.96.0.0/16, 10.244.0.0/24)."""


class DockerConfig(_Model):
    """The networks of docker environments: one per app and environment, a small subnet each."""

    address_pool: str = Field(
        DEFAULT_ADDRESS_POOL,
        description="IPv4 range shiplift carves its networks' subnets from, one per app and "
        "environment on an engine; pick one no network of the host or the engine's other networks use.",
    )
    subnet_size: int = Field(
        27,
        ge=16,
        le=29,
        description="Prefix length of each network's subnet: /27 is 29 containers (the router and the "
        "versions of a rollout), 2048 networks in a /16.",
    )

    @field_validator("address_pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        import ipaddress

        try:
            pool = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            raise ValueError(f"{short(value)} is not an IPv4 network such as 10.210.0.0/16") from None
        if pool.version != 4:
            raise ValueError(f"{short(value)} is not an IPv4 network such as 10.210.0.0/16")
        return str(pool)

    @model_validator(mode="after")
    def _fits(self) -> DockerConfig:
        prefix = int(self.address_pool.rsplit("/", 1)[1])
        if self.subnet_size < prefix:
            raise KeyedError(
                ("subnet_size",),
                f"/{self.subnet_size} subnets do not fit in address_pool {self.address_pool}: "
                f"use {prefix} or more",
            )
        return self


NOTIFY_EVENTS = (
    "awaiting_approval",
    "progressing",
    "paused",
    "promoting",
    "succeeded",
    "failed",
    "rolled_back",
    "rejected",
    "aborted",
    "torn_down",
    "drill_failed",
    "backup_failed",
)
"""What ``notify[].on`` may name: a deployment's phases (``shiplift.model.Phase`` in snake case)
and a failed restore drill or backup (see :mod:`shiplift.notify`)."""


class NotifyConfig(_Model):
    """A receiver of Slack-compatible webhook posts (see :mod:`shiplift.notify`)."""

    url: str = Field(
        repr=False,
        description="Incoming-webhook URL (https://…), or env:VAR to read it from the environment "
        "when a message is sent (it is a secret: never logged nor stored).",
    )
    on: list[str] = Field(
        default_factory=lambda: [
            "awaiting_approval",
            "succeeded",
            "failed",
            "aborted",
            "drill_failed",
            "backup_failed",
        ],
        min_length=1,
        description=f"The events posted: {', '.join(NOTIFY_EVENTS)}.",
    )
    timeout_seconds: float = Field(5, gt=0, le=60, description="Timeout of one post.")
    retries: int = Field(2, ge=0, le=5, description="Retries of a post that failed (no answer, 5xx, 429).")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        # the env:VAR of the ledger's url and of environments[].secrets
        if re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value) or re.match(r"^https?://[^/\s]+", value):
            return value
        # never echo the value: a webhook URL is a secret
        raise ValueError("the url is an https:// webhook URL or env:VAR (an environment variable holding it)")

    @field_validator("on")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if name not in NOTIFY_EVENTS:
                raise KeyedError((i,), f"{short(name)} is not an event; known: {', '.join(NOTIFY_EVENTS)}")
        return value


class Config(_Model):
    app: Name = Field(
        description="Application name: a lower-case letter, then lower-case letters, digits and single '-' "
        "(not '--', not at the end), at most 40; environment and database names follow the same rule."
    )
    image: ImageConfig = Field(description="How the image is built and where it is pushed.")
    health: HealthConfig = Field(description="How a new version proves it is healthy.")
    container_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port the app listens on (passed to it as PORT); default: the image's single "
        "TCP EXPOSE (an image with several or none is refused), read from the Docker engine, or on "
        "kubernetes from the image's registry when the engine does not have it.",
    )
    environments: list[EnvironmentConfig] = Field(min_length=1, description="The levels, in promotion order.")
    databases: list[DatabaseConfig] = Field(
        default_factory=list, description="Databases backed up and drilled."
    )
    retries: RetryConfig = Field(default_factory=RetryConfig, description="Retries of transient steps.")
    ledger: LedgerConfig = Field(default_factory=LedgerConfig, description="Where the ledger is kept.")
    docker: DockerConfig = Field(
        default_factory=DockerConfig,
        description="Networks of docker environments: the address pool and the size of each subnet.",
    )
    gitops: GitopsConfig | None = Field(
        None, description="The environment repository that records and says what runs (default: none)."
    )
    notify: list[NotifyConfig] = Field(
        default_factory=list,
        description="Webhooks told of phase changes, failed drills and failed backups (default: none).",
    )
    base_dir: Annotated[
        str, Field(exclude=True, description="The config file's directory (set by load_config; not a key).")
    ] = "."

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names: dict[str, int] = {}
        ports: dict[tuple[str, int], str] = {}
        namespaces: dict[tuple[str | None, str | None, str | None], str] = {}
        for i, env in enumerate(self.environments):
            if env.name in names:
                raise KeyedError((("environments", i, "name")), f"duplicate environment {env.name!r}")
            names[env.name] = i
            for port in (env.port, env.strategy.preview_port):
                if port is None:
                    continue
                if (env.host, port) in ports:
                    raise KeyedError(
                        ("environments", i, "port"),
                        f"port {port} is already used by environment {ports[(env.host, port)]!r}",
                    )
                ports[(env.host, port)] = env.name
            if env.target.kind == "kubernetes":
                # a version's Deployment is <app>-<version>: two environments in one namespace
                # of one cluster would apply the same objects
                place = (env.target.kubeconfig, env.target.context, env.target.namespace)
                if place in namespaces:
                    raise KeyedError(
                        ("environments", i, "target", "namespace"),
                        f"namespace {env.target.namespace} is already used by environment "
                        f"{namespaces[place]!r}: give each environment its own",
                    )
                namespaces[place] = env.name
        seen: set[str] = set()
        for i, db in enumerate(self.databases):
            if db.name in seen:
                raise KeyedError(("databases", i, "name"), f"duplicate database {db.name!r}")
            seen.add(db.name)
            for j, env_name in enumerate(db.backup_before or []):
                if env_name not in names:
                    raise KeyedError(
                        ("databases", i, "backup_before", j), f"no environment {env_name!r} in the config"
                    )
        return self

    def databases_backed_up_before(self, env: str) -> list[DatabaseConfig]:
        """The databases backed up before a promotion into ``env`` (``backup_before``, default: the last)."""
        last = [self.environments[-1].name]
        return [
            db for db in self.databases if env in (db.backup_before if db.backup_before is not None else last)
        ]

    def database(self, name: str) -> DatabaseConfig:
        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(d.name for d in self.databases) or "none"
        raise ConfigError(f"database {name!r} is not in the config (known: {known})")

    @property
    def root(self) -> Path:
        return Path(self.base_dir)

    @property
    def context_dir(self) -> Path:
        return (self.root / self.image.context).resolve()

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in self.environments)
        raise ConfigError(f"environment {name!r} is not in the config (known: {known})")

    def approve_by_commit(self, env: EnvironmentConfig) -> bool:
        """Whether a gitops commit passes ``env``'s approval gate (the environment's say wins)."""
        if env.gitops is not None and env.gitops.approve_by_commit is not None:
            return env.gitops.approve_by_commit
        return self.gitops is not None and self.gitops.approve_by_commit

    def index_of(self, name: str) -> int:
        return self.environments.index(self.environment(name))


def person(name: str) -> str:
    """One person, however the name was typed: ``Alice ``, ``alice`` and ``ALICE`` are one."""
    return " ".join(name.split()).casefold()


def parse_config(text: str, *, source: str = "shiplift.yaml", base_dir: str = ".") -> Config:
    """Parse and validate a config document; raise :class:`ConfigError` with one line."""
    data, lines = load_yaml(text, source=source)
    if "base_dir" in data:
        raise ConfigError(f"{source}: base_dir: unknown key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise format_error(exc, lines, source=source) from None


def load_config(path: str | Path = "shiplift.yaml") -> Config:
    """Read, parse and validate ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {type(exc).__name__}") from None
    return parse_config(text, source=str(path), base_dir=str(path.resolve().parent))
