"""Reading a YAML config file so that every error is one line naming the file, line and key.

:func:`load_yaml` parses a document with a safe loader that refuses duplicate keys and keeps the
line of every key; :func:`format_error` turns pydantic's first error into the one line the user
sees::

    shiplift.yaml:14: environments[1].port: port 18081 is already used by environment 'dev'

Nothing here knows shiplift's models (:mod:`shiplift.config` does): the models raise
:class:`KeyedError` for a cross-field error that belongs to a key, and tag their unions' members
with capitalised names (the class names), which are left out of the key shown.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from shiplift.errors import ConfigError

Loc = tuple[str | int, ...]
Lines = dict[Loc, int]


class KeyedError(ValueError):
    """An error that knows which key it belongs to, relative to the model that raises it."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


# libyaml's parser where PyYAML was built with it (the wheels are): the document is parsed once,
# in C, and its nodes keep their lines; the pure-Python parser otherwise
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, *, source: str) -> tuple[dict[str, Any], Lines]:
    """The document's top-level mapping and the line of every key; :class:`ConfigError` if malformed."""
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()  # one parse: the nodes give the lines and the data
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        detail = exc.problem or exc.context
        if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
            detail = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(one_line(f"{where}: malformed YAML: {detail}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {str(exc).splitlines()[0]}") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: malformed YAML: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigError(f"{source}: the document must be a mapping of keys (found {kind})")
    lines: Lines = {}
    _lines(node, (), lines)
    return data, lines


def _lines(node: yaml.Node | None, path: Loc, out: Lines) -> None:
    if node is None:
        return
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out[(*path, key.value)] = key.start_mark.line + 1
                _lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def format_error(exc: ValidationError, lines: Lines, *, source: str) -> ConfigError:
    """The one-line :class:`ConfigError` for pydantic's first error: ``source:line: key: message``."""
    err = exc.errors()[0]
    where_raised = _clean_loc(tuple(err["loc"]))
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, KeyedError):
        loc, msg = (*where_raised, *ctx_error.loc), str(ctx_error)
    else:
        loc, msg = where_raised, _message(err)
    line = _line_for(lines, loc)
    where = f"{source}:{line}" if line else source
    return ConfigError(one_line(f"{where}: {_format_loc(loc)}: {msg}"))


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
                text = repr(text)
            out += ("." if out else "") + text
    return out or "(top level)"


def _line_for(lines: Lines, loc: Loc) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's union tags from an error location: the models name them after their class
    (``SetWeightStep``, ``CanaryStrategy``); none of shiplift's keys starts with a capital."""
    return tuple(part for part in loc if not (isinstance(part, str) and part[:1].isupper()))


def one_line(text: str) -> str:
    return " ".join(text.split())


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in {"literal_error", "union_tag_invalid"}:
        return f"{msg} (found {short(err.get('input'))})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        # the type, never the value: a mistyped URL or key may hold a password
        return f"{msg} (found {type_name(err.get('input'))})"
    return msg


def type_name(value: Any) -> str:
    """What a value is, never what it holds: ``a mapping``, ``a string``…"""
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}
    return names.get(type(value), f"a {type(value).__name__}")


def short(value: Any) -> str:
    """``repr(value)``, cut to 40 characters: for values that are kinds or names, never secrets."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
