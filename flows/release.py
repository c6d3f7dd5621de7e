"""The release: build → push → dev → QA → staging → prod, each level health-gated.

Read it as the runbook it is:

1. refuse, touching nothing, what cannot go through: an invalid version label, build args
   whose names look secret, ``auto_approve`` where a gate does not allow it, a version marked
   bad (a rollout's analysis failed) unless ``force``
2. reuse the pushed image when this version was built from the same context, else build
   and push it (the push retries with exponential backoff and jitter); a version label is
   immutable: one released before whose build would differ now is refused unless ``force``
3. record the release (version, digest, git sha, author) in the ledger
4. promote it through every environment in config order (see ``flows/promote.py``), each
   behind its approval gate where the config has one (``flows/approval.py``); the first level
   that fails or is rejected stops the release, and that level keeps its old version
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import open_context
from flows.promote import deploy_version, refuse_bad
from shiplift.approvals import refuse_auto_approve
from shiplift.errors import InputError, ReleaseError, ShipliftError
from shiplift.images import build_args, refuse_secret_build_args
from shiplift.model import check_version
from shiplift.progress import announce
from tasks.images import build_image, find_pushed_image, push_image


@flow(name="release", flow_run_name="release-{version}", log_prints=True)
def release(
    config_path: str,
    version: str,
    auto_approve: bool = False,
    author: str | None = None,
    git_sha: str | None = None,
    extra_build_args: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, object]:
    """Build, push and promote ``version`` through every environment of the config."""
    check_version(version)
    refuse_secret_build_args(extra_build_args or {})
    ctx = open_context(config_path)
    config = ctx.config
    log = get_run_logger()
    if auto_approve:
        refuse_auto_approve(config.environments)
    refuse_bad(ctx, version, force, "release")  # before anything is built

    args = build_args(config, version, git_sha, extra_build_args or {})
    image = find_pushed_image(config, version, args)
    recorded = ctx.ledger.release(config.app, version)
    if recorded is not None and not force and (image is None or image.digest != recorded.digest):
        raise InputError(
            f"{version} was released before as {recorded.digest[:19]} and its build inputs differ now "
            "(source, Dockerfile, build args or git sha): release a new version, or pass --force to "
            f"record a new build of {version}"
        )
    if image is None:
        build_image(config, version, git_sha, args)
        image = ctx.retried(push_image)(config, version)
        announce(f"built and pushed {image}")
    else:
        announce(f"reusing {image} (already pushed from the same context)")
    ctx.ledger.record_release(
        app=config.app,
        version=version,
        repository=image.repository,
        digest=image.digest,
        git_sha=git_sha,
        author=author,
    )

    results: dict[str, str] = {}
    previous_level: str | None = f"built and pushed {image}"
    for env in config.environments:
        try:
            deploy_version(
                ctx,
                env,
                version,
                image,
                author=author,
                auto_approve=auto_approve,
                previous_level=previous_level,
                force=force,
            )
        except ShipliftError as exc:
            results[env.name] = f"failed: {exc}"
            _summary(config.app, version, image.digest, results)
            if isinstance(exc, InputError):
                raise
            raise ReleaseError(f"release {version} failed: {exc}") from None
        results[env.name] = "serving"
        previous_level = f"{version} serves {env.name} (Succeeded)"
    log.info("release %s serves every environment", version)
    _summary(config.app, version, image.digest, results)
    return {"app": config.app, "version": version, "digest": image.digest, "environments": results}


def _summary(app: str, version: str, digest: str, results: dict[str, str]) -> None:
    rows = "\n".join(f"| {env} | {outcome} |" for env, outcome in results.items())
    create_markdown_artifact(
        key=f"release-{app}".lower(),
        markdown=f"# {app} {version}\n\n`{digest}`\n\n| environment | outcome |\n|---|---|\n{rows}\n",
        description=f"release {version} of {app}",
    )
