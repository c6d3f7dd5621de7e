"""The configuration reference of README.md, written from the config models' descriptions.

Every key of ``shiplift.yaml`` is a field of a pydantic model in :mod:`shiplift.config`, and
every field carries a ``description``. This module walks the models from :class:`Config` down
and renders one markdown table per model (key, type with its bounds, default, meaning), so the
reference cannot drift from the code::

    uv run python -m shiplift.configdoc            # print the reference
    uv run python -m shiplift.configdoc --write    # put it into README.md, between the markers
    uv run python -m shiplift.configdoc --check    # exit 1 when README.md's copy is stale

``tests/shiplift/test_configdoc.py`` fails when README.md's copy differs from :func:`render`.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shiplift.config import Config

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
CONTENTS_START = "<!-- contents:start -->"
CONTENTS_END = "<!-- contents:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "uv run python -m shiplift.configdoc --write"
NOTE = f"<!-- generated from shiplift/config.py's Field descriptions: edit those, then run `{COMMAND}` -->"


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to ``-``."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


@dataclass
class _Section:
    heading: str
    intro: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "#" + slug(self.heading)


def _cell(text: str) -> str:
    """Text safe in a table cell: no pipe, no tag, no emphasis, one line."""
    text = " ".join(text.split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), ("*", "\\*")):
        text = text.replace(char, escaped)
    return text


def _rst(text: str) -> str:
    """A docstring's first paragraph, its reST roles (``:mod:`x```) as plain code."""
    first = text.strip().split("\n\n", 1)[0]
    first = re.sub(r":\w+:`([^`]*)`", r"`\1`", " ".join(first.split()))
    return first.replace("``", "`")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        data = value.model_dump(exclude_unset=True, exclude_defaults=True)
        if "kind" in type(value).model_fields:
            data = {"kind": getattr(value, "kind"), **data}  # noqa: B009 (any model with a kind)
        return _scalar(data)
    text = str(value)
    return text if text and text.strip() == text else repr(text)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return f"`{_scalar(info.default_factory())}`"  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "—"
    return f"`{_scalar(info.default)}`"


def _bounds(metadata: list[Any]) -> str:
    """A field's bounds: ``0–100``, ``> 0, ≤ 3600``, ``at least 1``."""
    low: tuple[str, Any] | None = None
    high: tuple[str, Any] | None = None
    for m in metadata:
        if isinstance(m, Ge):
            low = ("≥", m.ge)
        elif isinstance(m, Gt):
            low = (">", m.gt)
        elif isinstance(m, MinLen):
            low = ("at least", m.min_length)
        elif isinstance(m, Le):
            high = ("≤", m.le)
        elif isinstance(m, Lt):
            high = ("<", m.lt)
        elif isinstance(m, MaxLen):
            high = ("at most", m.max_length)
    if low and high and low[0] == "≥" and high[0] == "≤":
        return f"{_number(low[1])}–{_number(high[1])}"
    return ", ".join(f"{bound[0]} {_number(bound[1])}" for bound in (low, high) if bound)


def _strip(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` to ``X`` (a union of several types stays a union)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _members(annotation: Any) -> list[Any]:
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_strip(a) for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _kind(model: type[BaseModel]) -> str | None:
    """The ``kind`` a member of a union by kind stands for (its ``Literal`` default)."""
    info = model.model_fields.get("kind")
    if info is not None and get_origin(info.annotation) is Literal:
        return str(info.default)
    return None


class _Reference:
    """Walks the models from :class:`Config`, each model one section, rendered once."""

    def __init__(self, paths: dict[Any, list[str]] | None = None) -> None:
        self.sections: list[_Section] = []
        self.done: dict[Any, _Section] = {}
        self.known = paths or {}
        """Every path where each model (or union) is used, from a first walk: its heading."""
        self.paths: dict[Any, list[str]] = {}

    def heading(self, key: Any, path: str, suffix: str = "") -> str:
        self.paths.setdefault(key, [])
        if path not in self.paths[key]:
            self.paths[key].append(path)
        return "Keys of " + ", ".join(f"`{p}`{suffix}" for p in self.known.get(key, [path]))

    def type_text(self, annotation: Any, path: str, info: FieldInfo | None = None) -> str:
        bounds = _bounds(info.metadata) if info is not None else ""
        annotation = _strip(annotation)
        origin = get_origin(annotation)
        if origin is list:
            (item,) = get_args(annotation)
            text = "list of " + self.type_text(item, path + "[]")
        elif origin is dict:
            key, value = get_args(annotation)
            text = f"map of {self.type_text(key, path)} to {self.type_text(value, path + '.KEY')}"
        elif origin is Literal:
            text = " \\| ".join(f"`{v}`" for v in get_args(annotation))
        elif origin in (Union, types.UnionType):
            members = _members(annotation)
            if all(_is_model(m) for m in members):
                section = self.union(annotation, members, path)
                kinds = [_kind(m) for m in members]
                if all(kinds):
                    choices = " \\| ".join(f"`{k}`" for k in kinds)
                    text = f"[object by kind: {choices}]({section.anchor})"
                else:
                    keys = " \\| ".join(f"`{k}`" for m in members for k in m.model_fields)
                    text = f"[{keys}]({section.anchor})"
            else:
                text = " or ".join(self.type_text(m, path) for m in members)
        elif _is_model(annotation):
            text = f"[object]({self.model(annotation, path).anchor})"
        else:
            text = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
                annotation, getattr(annotation, "__name__", str(annotation))
            )
        return f"{text}, {bounds}" if bounds else text

    def rows(self, model: type[BaseModel], path: str) -> Iterator[tuple[str, str, str, str]]:
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            child = f"{path}.{name}" if path else name
            type_text = self.type_text(info.annotation, child, info)
            yield f"`{name}`", type_text, _default(info), _cell(info.description or "")

    def model(self, model: type[BaseModel], path: str, suffix: str = "") -> _Section:
        heading = self.heading(model, path, suffix) if path else "Top-level keys"
        if model in self.done:
            return self.done[model]
        intro = _rst(model.__doc__) if model.__doc__ and model.__module__ == Config.__module__ else ""
        section = _Section(heading, intro)
        self.done[model] = section
        self.sections.append(section)
        section.rows.extend(self.rows(model, path))
        return section

    def union(self, annotation: Any, members: list[type[BaseModel]], path: str) -> _Section:
        heading = self.heading(annotation, path)
        if annotation in self.done:
            return self.done[annotation]
        section = _Section(heading, "")
        self.done[annotation] = section
        self.sections.append(section)
        kinds = [_kind(m) for m in members]
        if all(kinds):
            # one model per kind: a section each, its keys and no other kind's
            section.intro = "One of these, chosen by `kind`; a key of another kind is refused."
            for model, kind in zip(members, kinds, strict=True):
                sub = self.model(model, path, suffix=f", `kind: {kind}`")
                section.rows.append((f"`kind: {kind}`", f"[object]({sub.anchor})", "", _cell(sub.intro)))
        else:
            # one key per member (a canary step): that key says which one it is
            section.intro = "Each is one of these keys."
            for model in members:
                section.rows.extend(self.rows(model, path))
        return section


def sections() -> list[_Section]:
    """Every model reachable from :class:`Config`, in the order a reader meets its keys."""
    first = _Reference()
    first.model(Config, "")
    reference = _Reference(first.paths)
    reference.model(Config, "")
    return reference.sections


def missing_descriptions() -> list[str]:
    """The keys whose field has no description, as ``path.key``."""
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            child = f"{path}.{name}" if path else name
            if not (info.description or "").strip():
                missing.append(child)
            for inner in _models_in(info.annotation):
                walk(inner, child)

    walk(Config, "")
    return missing


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    annotation = _strip(annotation)
    if _is_model(annotation):
        yield annotation
    for arg in get_args(annotation):
        if not isinstance(arg, str | int | float | bool):
            yield from _models_in(arg)


def render() -> str:
    """The reference, as it stands between the markers in README.md (markers excluded)."""
    out = [NOTE, ""]
    for section in sections():
        out.append(f"### {section.heading}")
        out.append("")
        if section.intro:
            out.extend([section.intro, ""])
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        out.extend(f"| {' | '.join(row)} |" for row in section.rows)
        out.append("")
    return "\n".join(out)


def headings(markdown: str) -> list[tuple[int, str, str, int]]:
    """Every heading outside code blocks: level, text, its anchor as GitHub makes it (a repeated
    anchor gets ``-1``, ``-2``…) and its line's index."""
    found: list[tuple[int, str, str, int]] = []
    seen: dict[str, int] = {}
    fence = ""
    for index, line in enumerate(markdown.splitlines()):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = "" if fence == marker else fence or marker
            continue
        match = re.match(r"(#{1,6}) +(.*?) *#* *$", line)
        if fence or not match:
            continue
        text = match.group(2)
        anchor = slug(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        found.append((len(match.group(1)), text, anchor, index))
    return found


def contents(readme: str) -> str:
    """The README's table of contents: its ``##`` and ``###`` headings, but those of the
    configuration reference (between its markers) and the contents' own heading."""
    lines = readme.splitlines()
    block = range(0)
    if START in lines and END in lines:
        block = range(lines.index(START), lines.index(END))
    return "\n".join(
        f"{'  ' * (level - 2)}- [{text}](#{anchor})"
        for level, text, anchor, index in headings(readme)
        if level in (2, 3) and text != "Contents" and index not in block
    )


def replace_block(readme: str, block: str, start: str = START, end: str = END) -> str:
    """``readme`` with the text between the markers replaced by ``block``."""
    head, found_start, rest = readme.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"no {start} … {end} block")
    return f"{head}{start}\n{block}\n{end}{tail}"


def current_block(readme: str, start: str = START, end: str = END) -> str:
    """What README.md holds between the markers."""
    _, found_start, rest = readme.partition(start)
    block, found_end, _ = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"no {start} … {end} block")
    return block.strip("\n")


def update(readme: str) -> str:
    """``readme`` with both generated blocks as they should be: the reference, then the contents."""
    text = replace_block(readme, render())
    return replace_block(text, contents(text), CONTENTS_START, CONTENTS_END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shiplift.configdoc",
        description="The configuration reference of README.md, from shiplift/config.py's descriptions "
        "(and the README's table of contents).",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite both blocks in the README")
    group.add_argument("--check", action="store_true", help="exit 1 when a block of the README is stale")
    parser.add_argument("--readme", type=Path, default=README, help="the README (default: the repository's)")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(render() + "\n")
        return 0
    try:
        readme = args.readme.read_text(encoding="utf-8")
        wanted = update(readme)
    except (OSError, ValueError) as exc:
        print(f"shiplift: error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if wanted == readme:
        return 0
    if args.check:
        print(
            f"{args.readme}: the configuration reference or the contents are stale; run `{COMMAND}`",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme}: configuration reference and contents updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
