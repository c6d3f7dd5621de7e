"""`shiplift sync` on an https environment repository whose token is wrong or unset, as a user
runs it (its own process, the session's Prefect server): one line naming the repository, exit 2,
no traceback, and the token in no line the user sees, Prefect's own (``-v``) included. The rest
of ``gitops.token`` (pushes and reads with it, where it is never written) is
tests/shiplift/test_gitops.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.githttp import GitHttpServer

TOKEN = "glpat-r1ght-" + "5" * 20
WRONG = "glpat-wr0ng-" + "6" * 20


def test_sync_with_a_refused_or_unset_token_is_one_line_and_exit_2(tmp_path: Path, prefect_api: str) -> None:
    server = GitHttpServer(tmp_path / "srv", user="x-access-token", token=TOKEN).start()
    try:
        url = server.repo()
        config = tmp_path / "shiplift.yaml"
        config.write_text(
            "app: tokened\nimage: {repository: 127.0.0.1:5000/tokened}\nhealth: {path: /healthz}\n"
            "environments: [{name: prod, port: 18084}]\n"
            f"gitops: {{repo: '{url}', token: env:GITOPS_TOKEN}}\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "GITOPS_TOKEN"}
        refused = f"git fetch {url}: the repository refused the token in env:GITOPS_TOKEN"
        unset = (
            f"gitops.token: env:GITOPS_TOKEN is not set; export GITOPS_TOKEN with an access token for {url}"
        )
        for token, why, verbose in ((WRONG, refused, []), (WRONG, refused, ["-v"]), (None, unset, [])):
            proc = subprocess.run(
                [sys.executable, "-m", "shiplift", "sync", *verbose, "--config", str(config)],
                env=env if token is None else {**env, "GITOPS_TOKEN": token},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 2, proc.stderr
            (line,) = [x for x in proc.stderr.splitlines() if x.startswith("shiplift: error:")]
            assert line.startswith(f"shiplift: error: {why}"), line
            assert verbose or "Traceback" not in proc.stderr, "Prefect's log lines (-v) hold its traceback"
            assert WRONG not in proc.stdout + proc.stderr
    finally:
        server.stop()
