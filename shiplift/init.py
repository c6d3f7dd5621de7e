"""``shiplift init``: a commented ``shiplift.yaml`` for the Dockerfile beside it.

What can be read from the project is filled in: the app's name (from the directory), the port
(the Dockerfile's single ``EXPOSE``); what cannot is a ``TODO`` that the config loader refuses,
naming the key and the line, until a person fills it in (the health path; the port when the
Dockerfile exposes none or several). The environments are dev → qa → staging → prod on one
Docker host, with an approval gate on prod.

Nothing here imports more than the standard library: ``init`` is a fast command.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from pathlib import Path

from shiplift.errors import InputError

PLACEHOLDER = "TODO"
"""What stands where a person must fill in a value; the config loader refuses it."""
ENVIRONMENTS = ("dev", "qa", "staging", "prod")
FIRST_PORT = 18081
"""The host port of the first environment's stable endpoint; the next ones count up."""

_NAME_MAX = 40  # shiplift.config.NAME_MAX (not imported: that module loads pydantic)
_STAGE = re.compile(r"^FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<alias>\S+))?\s*$", re.I)
_EXPOSE = re.compile(r"^EXPOSE\s+(?P<ports>.+)$", re.I)
_PORT = re.compile(r"^(?P<port>[0-9]+)(?:-[0-9]+)?(?:/(?P<proto>tcp|udp|sctp))?$", re.I)


@dataclass(frozen=True)
class Exposed:
    """What the Dockerfile's final stage exposes: TCP ports, and entries that could not be read."""

    ports: tuple[int, ...]
    unreadable: tuple[str, ...]

    @property
    def port(self) -> int | None:
        """The one port, when there is exactly one and nothing unreadable beside it."""
        return self.ports[0] if len(self.ports) == 1 and not self.unreadable else None


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, one string each: comments dropped, ``\\`` continuations joined."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def exposed(text: str) -> Exposed:
    """The TCP ports the final stage of a Dockerfile exposes (its own and those of the stages it
    is built ``FROM``, by alias). A port given by a variable (``EXPOSE $PORT``) is unreadable."""
    stages: list[tuple[str, str | None, list[str]]] = []  # (image, alias, EXPOSE arguments)
    for ins in instructions(text):
        stage = _STAGE.match(ins)
        if stage:
            stages.append((stage["image"], stage["alias"], []))
            continue
        expose = _EXPOSE.match(ins)
        if expose and stages:
            stages[-1][2].extend(expose["ports"].split())
    if not stages:
        return Exposed((), ())
    by_alias = {alias.lower(): i for i, (_, alias, _) in enumerate(stages) if alias}
    chain: list[int] = []
    at: int | None = len(stages) - 1
    while at is not None and at not in chain:
        chain.append(at)
        at = by_alias.get(stages[at][0].lower())
    ports: list[int] = []
    unreadable: list[str] = []
    for i in chain:
        for entry in stages[i][2]:
            port = _PORT.match(entry)
            if port is None:
                unreadable.append(entry)
            elif (port["proto"] or "tcp").lower() == "tcp" and int(port["port"]) not in ports:
                ports.append(int(port["port"]))
    return Exposed(tuple(sorted(ports)), tuple(unreadable))


def app_name(directory: Path) -> str:
    """A valid app name from a directory's name (``My_App`` → ``my-app``); ``app`` if none remains."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.name.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:_NAME_MAX].strip("-")
    return name or "app"


def render(app: str, found: Exposed, approver: str) -> str:
    """The text of the config file."""
    if found.port is not None:
        port_lines = (
            "# The port the app listens on, from the Dockerfile's EXPOSE (it is also passed as PORT).\n"
            f"container_port: {found.port}\n"
        )
    else:
        listed = [str(p) for p in found.ports] + list(found.unreadable)
        why = (
            f"the Dockerfile exposes several ports ({', '.join(listed)}): name the HTTP one"
            if listed
            else "the Dockerfile has no EXPOSE: name the port the app listens on"
        )
        port_lines = (
            f"# {PLACEHOLDER}: {why} (it is also passed to the app as PORT).\ncontainer_port: {PLACEHOLDER}\n"
        )
    envs = []
    for i, name in enumerate(ENVIRONMENTS):
        lines = [
            f"  - name: {name}",
            _commented("    target: {kind: docker}", "or {kind: kubernetes, namespace: NS}"),
            _commented(
                f"    port: {FIRST_PORT + i}", f"the stable endpoint: http://127.0.0.1:{FIRST_PORT + i}"
            ),
            _commented("    strategy: {kind: replace}", "or blue_green, canary (with steps), ab"),
        ]
        if name == "prod":
            lines += [
                "    # The gate: a release waits here until one of the approvers decides",
                "    # (shiplift approve --env prod --version V --as NAME, or the Prefect UI).",
                "    approval:",
                _commented(f"      approvers: [{approver}]", "who may decide (shiplift approve --as NAME)"),
                "      min_approvals: 1",
                _commented("      forbid_self_approval: false", "true: the release's author may not approve"),
                _commented("      timeout_seconds: 86400", "no decision within a day is a rejection"),
            ]
        envs.append("\n".join(lines))
    return f"""\
# shiplift.yaml for {app}, written by `shiplift init`.
# Fill in every {PLACEHOLDER}; `shiplift status` then checks the file and names any key still wrong.
# Every key: the configuration reference in shiplift's README.

app: {app}

image:
  context: .                          # the build context, relative to this file
  dockerfile: Dockerfile
  # Where the image is pushed; 127.0.0.1:5000 is a registry on this machine.
  repository: 127.0.0.1:5000/{app}
  build_args: {{}}

health:
  # {PLACEHOLDER}: the path of the app that answers 200 once it is ready, e.g. /healthz.
  # A new version that never answers 200 here takes no traffic.
  path: {PLACEHOLDER}
  timeout_seconds: 60

{port_lines}
# The levels a release is promoted through, in order.
environments:
{chr(10).join(envs)}
"""


def _commented(line: str, comment: str) -> str:
    return f"{line:<38}# {comment}"


def write_config(path: Path) -> str:
    """Write the config for the Dockerfile beside ``path``; the text written.

    :class:`InputError` (one line) when ``path`` exists or there is no Dockerfile beside it.
    """
    if path.exists():
        raise InputError(f"{path} already exists; edit it, or remove it to start again")
    directory = path.resolve().parent
    dockerfile = directory / "Dockerfile"
    try:
        docker_text = dockerfile.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(
            f"no Dockerfile in {directory}: run shiplift init where the app's Dockerfile is"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {dockerfile}: {exc.strerror or type(exc).__name__}") from None
    text = render(app_name(directory), exposed(docker_text), _approver())
    try:
        with path.open("x", encoding="utf-8") as fh:  # "x": never over a file made meanwhile
            fh.write(text)
    except FileExistsError:
        raise InputError(f"{path} already exists; edit it, or remove it to start again") from None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    return text


def _approver() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "alice"
    return name if re.fullmatch(r"[A-Za-z0-9._-]+", name) else "alice"
