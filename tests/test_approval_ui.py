"""Acceptance a (issue 3): a person approves in the Prefect UI, in real headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.support.parts import Project
from tests.test_approvals import _gated, _paused

pytestmark = pytest.mark.real
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by scripts/bootstrap.sh
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def test_approval_through_the_prefect_ui_resume_form(project: Project, artifacts_dir: Path) -> None:
    _gated(project)
    proc = project.popen("release", "--version", "v2", "--author", "dave")
    dep = _paused(project, proc)
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui}/runs/flow-run/{dep.run_id}")
            page.get_by_role("button", name="Resume").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Resume Flow Run").wait_for()
            # the pause description tells the approver what is being promoted; the dialog's title
            # comes first, the run's input form after the UI has read it (slower on a busy machine)
            dialog.get_by_text(f"Promote {project.app} v2 to prod").wait_for(timeout=60_000)
            assert dep.digest in dialog.inner_text()
            labels = [
                t.strip() for t in dialog.locator("label, .p-label__text").all_inner_texts() if t.strip()
            ]
            assert any("Approver" in t for t in labels) and any("Comment" in t for t in labels)
            dialog.get_by_role("switch").first.click()  # approved (the second is abort)
            boxes = dialog.locator("textarea")
            # the form comes filled in with the gate it decides: the decision is bound to it
            assert [boxes.nth(i).input_value() for i in (2, 3, 4)] == [project.app, "prod", "v2"]
            boxes.nth(0).fill("bob")
            boxes.nth(1).fill("looks good in staging")
            page.screenshot(path=str(artifacts_dir / "approval-form.png"))
            dialog.get_by_role("button", name="Submit").click()
            _, stderr = proc.communicate(timeout=300)
        finally:
            browser.close()
    assert proc.returncode == 0, stderr
    assert project.version_at("prod") == "v2"
    from shiplift.ledger import open_ledger

    (decision,) = open_ledger(project.ledger_url()).approvals(dep.id)
    assert (decision.approver, decision.approved, decision.comment, decision.accepted) == (
        "bob",
        True,
        "looks good in staging",
        True,
    )
    assert (artifacts_dir / "approval-form.png").stat().st_size > 10_000
