"""Links into the Prefect UI, found without importing Prefect (``history`` must stay fast).

The UI's address is the one Prefect's settings give (read by
:func:`shiplift.prefect_api.read_settings`: the environment, then the active profile):
``PREFECT_UI_URL``, else inferred from ``PREFECT_API_URL`` as Prefect infers it (``…/api``
dropped; Prefect Cloud's API becomes its app). Without either, the project's local Prefect
server (:mod:`shiplift.localserver`) when it runs. A ``user:password@`` part is never shown.
"""

from __future__ import annotations

from pathlib import Path

_CLOUD_API = "https://api.prefect.cloud/api"
_CLOUD_UI = "https://app.prefect.cloud"


def ui_url(root: Path | None = None) -> str | None:
    """The Prefect UI's address; ``None`` when no Prefect server is configured or running.

    ``root``: the config's directory, whose local server counts when no API is configured.
    """
    from shiplift.prefect_api import _shown, read_settings

    found = read_settings().values
    if found.get("PREFECT_UI_URL"):
        return _shown(found["PREFECT_UI_URL"].strip())
    if found.get("PREFECT_API_URL"):
        return _shown(_inferred(found["PREFECT_API_URL"].strip()))
    if root is None:
        return None
    from shiplift.localserver import LocalServer

    running = LocalServer(root).status()
    return running.ui_url if running is not None else None


def run_url(run_id: str | None, ui: str | None) -> str | None:
    """The Prefect UI page of flow run ``run_id``; ``None`` without a run or a known UI."""
    if not run_id or not ui:
        return None
    return run_page(ui, run_id)


def run_page(ui: str, run_id: str) -> str:
    """The address of flow run ``run_id``'s page in the Prefect UI at ``ui``."""
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"


def _inferred(api: str) -> str:
    """Prefect's own inference of the UI from the API URL (``prefect.settings`` does the same)."""
    url = api.rstrip("/")
    if url.startswith(_CLOUD_API):
        url = url.replace(_CLOUD_API, _CLOUD_UI, 1)
    url = url.removesuffix("/api").replace("/api/", "/")
    return url.replace("/accounts/", "/account/").replace("/workspaces/", "/workspace/")
