"""The release: build → push → dev → QA → staging → prod, each level health-gated.

Read it as the runbook it is:

1. refuse, touching nothing, what cannot go through: an invalid version label, build args
   whose names look secret, ``auto_approve`` where a gate does not allow it, a version marked
   bad (a rollout's analysis failed) unless ``force``
2. the image:
   - ``image`` given (``trigger --image REPO@sha256:…``: CI built and pushed it): check the
     registry has that digest, and build nothing;
   - else, when the run is served (a worker runs it) and names a commit, or ``image.source`` is
     set: check that commit out, clean, into a temporary directory (``shiplift/source.py``) and
     build from there, so the image carries exactly the commit it is labelled with; a commit
     that is not there is refused with one line before anything is built;
   - reuse the pushed image when this version was built from the same context, else build
     and push it (the push retries with exponential backoff and jitter); a version label is
     immutable: one released before whose image would differ now is refused unless ``force``
3. record the release (version, digest, git sha, author) in the ledger
4. promote it through every environment in config order (see ``flows/promote.py``), each
   behind its approval gate where the config has one (``flows/approval.py``); the first level
   that fails or is rejected stops the release, and that level keeps its old version
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.runtime import deployment
from prefect.states import Cancelled

from flows.common import Context, open_context
from flows.promote import abort_cancelled, deploy_version, refuse_bad
from shiplift import source
from shiplift.approvals import refuse_auto_approve
from shiplift.config import Config
from shiplift.errors import ConfigError, InputError, ReleaseError, ShipliftError
from shiplift.images import build_args, parse_image, refuse_secret_build_args
from shiplift.model import ImageRef, check_version
from shiplift.progress import announce
from tasks.deploy import check_settings
from tasks.images import build_image, check_pushed_image, find_pushed_image, push_image
from tasks.source import checkout_source


@flow(name="release", flow_run_name="release-{version}", log_prints=True, on_cancellation=[abort_cancelled])
def release(
    config_path: str,
    version: str,
    auto_approve: bool = False,
    author: str | None = None,
    git_sha: str | None = None,
    extra_build_args: dict[str, str] | None = None,
    force: bool = False,
    image: str | None = None,
) -> dict[str, object] | State:
    """Build (or take ``image``, pushed by CI), push and promote ``version`` through every
    environment of the config."""
    check_version(version)
    refuse_secret_build_args(extra_build_args or {})
    pinned = parse_image(image) if image else None
    if pinned is not None and extra_build_args:
        raise InputError("--build-arg: an image given with --image is released as pushed, not built")
    ctx = open_context(config_path)
    config = ctx.config
    log = get_run_logger()
    if auto_approve:
        refuse_auto_approve(config.environments)
    refuse_bad(ctx, version, force, "release")  # before anything is built
    if any(env.secrets for env in config.environments):
        check_settings(config)  # every secret readable here, before anything is built

    if pinned is not None:
        image_ref = check_pushed_image(pinned)
        _refuse_changed(ctx, version, image_ref, force, "--image names another digest")
        announce(f"releasing {image_ref} as pushed: nothing built")
        got = f"pushed {image_ref}"
    elif config.image.source is not None or (git_sha and deployment.id):
        co = checkout_source(config, git_sha)
        try:
            git_sha = co.sha
            announce(f"building commit {co.sha[:12]} of {co.origin} from a clean checkout")
            in_checkout = config.model_copy(update={"base_dir": str(co.base_dir)})
            image_ref = _build(ctx, in_checkout, version, git_sha, extra_build_args or {}, force)
        finally:
            source.remove(co)
        got = f"built and pushed {image_ref}"
    else:
        image_ref = _build(ctx, config, version, git_sha, extra_build_args or {}, force)
        got = f"built and pushed {image_ref}"
    ctx.ledger.record_release(
        app=config.app,
        version=version,
        repository=image_ref.repository,
        digest=image_ref.digest,
        git_sha=git_sha or None,
        author=author,
    )

    results: dict[str, str] = {}
    previous_level: str | None = got
    for env in config.environments:
        try:
            deploy_version(
                ctx,
                env,
                version,
                image_ref,
                author=author,
                auto_approve=auto_approve,
                previous_level=previous_level,
                force=force,
            )
        except ShipliftError as exc:
            results[env.name] = f"failed: {exc}"
            _summary(config.app, version, image_ref.digest, results)
            if isinstance(exc, InputError | ConfigError):
                raise
            if _cancelled(ctx):
                # the run was cancelled (UI, API) and its rollout aborted for it: the run ends
                # Cancelled, not Failed by the abort's error racing the cancellation
                return Cancelled(message=f"release {version} cancelled: {exc}")
            raise ReleaseError(f"release {version} failed: {exc}") from None
        results[env.name] = "serving"
        previous_level = f"{version} serves {env.name} (Succeeded)"
    log.info("release %s serves every environment", version)
    _summary(config.app, version, image_ref.digest, results)
    return {"app": config.app, "version": version, "digest": image_ref.digest, "environments": results}


def _build(
    ctx: Context, config: Config, version: str, git_sha: str | None, extra: dict[str, str], force: bool
) -> ImageRef:
    """Reuse the pushed image of ``version`` built from the same context, else build and push it.

    ``config`` is the run's config, its ``base_dir`` moved into the checkout when there is one.
    """
    args = build_args(config, version, git_sha, extra)
    image = find_pushed_image(config, version, args)
    _refuse_changed(
        ctx, version, image, force, "its build inputs differ now (source, Dockerfile, build args or git sha)"
    )
    if image is None:
        build_image(config, version, git_sha, args)
        image = ctx.retried(push_image)(config, version)
        announce(f"built and pushed {image}")
    else:
        announce(f"reusing {image} (already pushed from the same context)")
    return image


def _refuse_changed(ctx: Context, version: str, image: ImageRef | None, force: bool, why: str) -> None:
    """A version label is immutable: one released before as another digest is refused."""
    recorded = ctx.ledger.release(ctx.config.app, version)
    if recorded is not None and not force and (image is None or image.digest != recorded.digest):
        raise InputError(
            f"{version} was released before as {recorded.digest[:19]} and {why}: release a new "
            f"version, or pass --force to record a new build of {version}"
        )


def _summary(app: str, version: str, digest: str, results: dict[str, str]) -> None:
    rows = "\n".join(f"| {env} | {outcome} |" for env, outcome in results.items())
    create_markdown_artifact(
        key=f"release-{app}".lower(),
        markdown=f"# {app} {version}\n\n`{digest}`\n\n| environment | outcome |\n|---|---|\n{rows}\n",
        description=f"release {version} of {app}",
    )


def _cancelled(ctx: Context) -> bool:
    """Whether this flow run is being cancelled or was (its state on the API)."""
    if ctx.run_id is None:
        return False
    from uuid import UUID

    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(ctx.run_id)).state
    except Exception:  # noqa: BLE001 - the API may blink: then it is an ordinary failure
        return False
    return state is not None and (state.is_cancelling() or state.is_cancelled())
