"""README.md's generated parts: the configuration reference and the contents are current.

The reference is rendered from the config models' Field descriptions (shiplift.configdoc); a
key added to shiplift/config.py without a description, or a README not regenerated after a
change, fails here with the command that fixes it.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from shiplift import configdoc
from shiplift.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REGENERATE = f"run `{configdoc.COMMAND}` and commit README.md"


def _diff(have: str, want: str) -> str:
    lines = difflib.unified_diff(
        have.splitlines(), want.splitlines(), "README.md", "generated", lineterm="", n=1
    )
    return "\n".join(list(lines)[:40])


def test_every_config_key_has_a_description() -> None:
    missing = configdoc.missing_descriptions()
    assert not missing, (
        "config keys without a description (add Field(description=...) in shiplift/config.py, "
        f"then {REGENERATE}): {', '.join(missing)}"
    )


def test_the_readme_configuration_reference_is_generated_from_the_models() -> None:
    readme = README.read_text(encoding="utf-8")
    have = configdoc.current_block(readme)
    want = configdoc.render().strip("\n")
    assert have == want, f"README.md's configuration reference is stale: {REGENERATE}\n{_diff(have, want)}"


def test_the_readme_contents_list_every_section() -> None:
    readme = README.read_text(encoding="utf-8")
    have = configdoc.current_block(readme, configdoc.CONTENTS_START, configdoc.CONTENTS_END)
    want = configdoc.contents(readme)
    assert have == want, f"README.md's contents are stale: {REGENERATE}\n{_diff(have, want)}"


def test_every_link_to_a_section_lands_on_a_heading() -> None:
    for doc in (README, ROOT / "bench" / "README.md"):
        text = doc.read_text(encoding="utf-8")
        anchors = {anchor for _, _, anchor, _ in configdoc.headings(text)}
        links = set(re.findall(r"\]\(#([^)]+)\)", text))
        assert links, doc
        assert not links - anchors, f"{doc.name}: links to no heading: {sorted(links - anchors)}"
    bench = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    bench_anchors = {anchor for _, _, anchor, _ in configdoc.headings(bench)}
    for anchor in re.findall(r"\]\(bench/README\.md#([^)]+)\)", README.read_text(encoding="utf-8")):
        assert anchor in bench_anchors, (
            f"README.md links to bench/README.md#{anchor}, which has no such heading"
        )


def test_the_reference_names_each_key_its_type_bounds_and_default() -> None:
    block = configdoc.render()
    rows = {
        "### Keys of `health`": "| `timeout_seconds` | number, > 0, ≤ 3600 | `60` |",
        "### Keys of `environments[]`": "| `port` | integer, 1–65535 | required |",
        "### Keys of `environments[].strategy`, `kind: canary`": "| `sticky` | boolean | `false` |",
        "### Keys of `environments[].strategy.steps[]`": "| `set_weight` | integer, 0–100 | required |",
        "### Keys of `environments[].approval`, `databases[].approval`": "| `approvers` | list of string, at least 1 | required |",
    }
    for heading, row in rows.items():
        section = block.split(heading + "\n", 1)[1].split("\n### ", 1)[0]
        assert row in section, (heading, row)
    # every link in the reference lands on one of its own sections
    anchors = {anchor for _, _, anchor, _ in configdoc.headings(block)}
    assert set(re.findall(r"\]\(#([^)]+)\)", block)) <= anchors


def test_the_defaults_shown_are_the_ones_a_config_gets() -> None:
    config = parse_config(
        "app: hello\nimage: {repository: 127.0.0.1:5000/hello}\nhealth: {path: /healthz}\n"
        "environments: [{name: dev, port: 18081}]\n"
    )
    block = configdoc.render()
    env = config.environments[0]
    assert f"| `drain_seconds` | number, 0–3600 | `{env.drain_seconds:g}` |" in block
    assert "| `ref` | string | `HEAD` |" in block
    assert f"| `count` | integer, 0–20 | `{config.retries.count}` |" in block
    assert "| `strategy` | [object by kind:" in block and "| `{kind: replace}` |" in block


def test_check_fails_on_a_stale_readme_and_write_fixes_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace("| `app` |", "| `app_renamed` |", 1), encoding="utf-8")
    command = [sys.executable, "-m", "shiplift.configdoc", "--readme", str(readme)]

    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert configdoc.COMMAND in stale.stderr and "Traceback" not in stale.stderr

    written = subprocess.run([*command, "--write"], capture_output=True, text=True, timeout=60, check=False)
    assert written.returncode == 0, written.stderr
    assert readme.read_text(encoding="utf-8") == text

    gone = tmp_path / "NO-MARKERS.md"
    gone.write_text("# nothing generated here\n", encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, "-m", "shiplift.configdoc", "--readme", str(gone), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "config-reference:start" in bad.stderr
