"""Acceptance a, literally: the README's demo command, run in a fresh copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.real


def _fresh_copy(dest: Path) -> Path:
    """The files git tracks (as in the work tree): what a fresh clone holds."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def demo_cleaned_up(tmp_path: Path) -> Iterator[Path]:
    """After the test: the demo's registry and Prefect server (run from this copy) are stopped,
    and its app's containers removed, so the machine's 127.0.0.1:5000 and :4200 are free again."""
    from tests.support.parts import remove_app

    yield tmp_path
    subprocess.run(["pkill", "-TERM", "-f", str(tmp_path)], check=False)
    remove_app("hello")


def test_the_readme_demo_releases_v1_then_v2_everywhere(demo_cleaned_up: Path) -> None:
    tmp_path = demo_cleaned_up
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    demo_command = first_block.strip().splitlines()[0].split("#")[0].strip()
    assert demo_command == "bash scripts/demo.sh"

    repo = _fresh_copy(tmp_path / "shiplift")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    env["SHIPLIFT_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        demo_command.split(), cwd=repo, env=env, capture_output=True, text=True, timeout=1500, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr  # clean: no failed probes, no uv or pip noise
    assert "curl: (" not in output, output[-3000:]
    assert "Bytecode compiled" not in output, output[-3000:]
    assert "WARNING: " not in output and "level=warning" not in output, output[-3000:]
    for port in (18081, 18082, 18083, 18084):
        assert f"http://127.0.0.1:{port}/version -> v2" in proc.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip() == "v2"

    status = subprocess.run(
        ["uv", "run", "--quiet", "shiplift", "status", "--json"],
        cwd=repo / "examples" / "hello",
        env={**env, "PREFECT_API_URL": "http://127.0.0.1:4200/api"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    doc = json.loads(status.stdout)
    assert doc["app"] == "hello"
    assert list(doc["environments"]) == ["dev", "qa", "staging", "prod"]
    digests = {e["digest"] for e in doc["environments"].values()}
    assert len(digests) == 1 and next(iter(digests)).startswith("sha256:")
    for name, entry in doc["environments"].items():
        assert (entry["version"], entry["weights"], entry["phase"]) == ("v2", {"v2": 100}, "Succeeded"), name
