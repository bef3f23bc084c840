"""`python -m bot`: run the bot against Telegram, or against the local sandbox without a token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from telegram import Update

from bot.access import set_command_menus
from bot.app import build_application
from bot.buildinfo import version_line
from bot.config import ConfigError, Secret, Settings, load_settings
from bot.context import Services
from bot.inbox import Inbox
from bot.logs import RedactFilter, configure_logging
from bot.metrics import Metrics
from bot.retrain import cancel_retraining_for_shutdown
from bot.web import WebServer
from model.datadir import models_dir
from model.default import DEFAULT_MODEL_FILE
from model.feedback import PrivacyLog, SqliteFeedbackLog
from model.feedback.export import delete_export_archives
from model.feedback.health import FeedbackUnavailable
from model.feedback.schema import IMAGES_FOLDER, database_path, feedback_dir
from model.pool import Classifier, ModelLoadError, PoolConfig
from model.registry import ModelCard, Registry, RegistryError
from model.worker import WorkerConfig

logger = logging.getLogger("bot")


def main(argv: Sequence[str] = ()) -> int:
    """Read the settings, then run until SIGTERM or Ctrl-C; returns the exit status.

    `--version` prints the versions of Verdict, Python and the libraries that shape its answers
    (read from package metadata: nothing heavy is imported) and returns.
    """
    if "--version" in argv:
        print(version_line())
        return 0
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Configuration error (check your environment or .env):\n{exc}", file=sys.stderr)
        return 2
    problem = data_dir_problem(settings.data_dir)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    secrets_to_hide = [s.get() for s in (settings.telegram_token, settings.webhook_secret) if s]
    redact = configure_logging(settings.log_level, secrets_to_hide)
    try:
        return asyncio.run(run(settings, redact))
    except KeyboardInterrupt:
        return 130


async def run(settings: Settings, redact: RedactFilter) -> int:
    """Start the sandbox if needed, the classifier, then the bot; stop them in reverse."""
    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    sandbox = None
    if settings.telegram_token is None:
        # The sandbox lives in a checkout (sandbox/), not in the production image: there, a
        # missing token is a configuration error, never a quiet start that reaches nobody.
        try:
            from sandbox import Sandbox
        except ModuleNotFoundError as exc:
            if exc.name != "sandbox":
                raise
            print(
                "TELEGRAM_TOKEN is not set: set it (the token from @BotFather) in the "
                "environment or .env.\nWithout a token a source checkout runs the local "
                "sandbox instead, but the sandbox is not installed here (the production image "
                "leaves it out).",
                file=sys.stderr,
            )
            return 2

        token = f"{secrets.randbelow(10**9) + 10**9}:sandbox-{secrets.token_urlsafe(24)}"
        redact.secrets.append(token)
        # The chat page can play one admin (chat id == user id): the smallest of ADMIN_IDS.
        page_admin_id = min(settings.admin_ids) if settings.admin_ids else None
        sandbox = Sandbox(token, page_admin_id=page_admin_id, admin_ids=settings.admin_ids)
        url = await sandbox.start(settings.sandbox_host, settings.sandbox_port)
        settings = replace(
            settings, telegram_token=Secret(token), telegram_api_url=url, sandbox=True
        )
        logger.warning(
            "SANDBOX MODE: no TELEGRAM_TOKEN set; serving the local stand-in Bot API at %s "
            "— this bot is not on Telegram",
            url,
        )

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.models_dir)
    try:
        model_path = choose_model(settings, registry)
    except RegistryError as exc:
        logger.error("cannot load the active model: %s", exc)
        print(f"Model registry error: {exc}", file=sys.stderr)
        return 2
    classifier = build_classifier(settings, model_path)
    metrics = Metrics()
    metrics.watch_pool(classifier.stats)
    classifier.set_observer(metrics.observe_batch)
    feedback_log = await SqliteFeedbackLog.open(settings.data_dir)
    inbox = Inbox.disabled()
    if settings.inbox:
        try:
            inbox = await Inbox.open(settings.data_dir)
        except (sqlite3.Error, OSError, FeedbackUnavailable) as exc:  # a full or read-only disk
            inbox = Inbox.unavailable(exc)
    metrics.watch_inbox(inbox.counts)
    services = Services.create(
        settings,
        classifier,
        feedback_log,
        feedback_log.settings,
        metrics,
        registry,
        photo_slots=classifier.queue_size,
        inbox=inbox,
    )
    stored_threshold = await services.stored_settings.get_setting("confidence_threshold")
    if stored_threshold is not None:  # set by an admin with /threshold
        services.tunables.confidence_threshold = float(stored_threshold)
    application = build_application(services)
    webhook = settings.webhook_url is not None
    web = WebServer(
        application,
        services,
        webhook_path=settings.webhook_path if webhook else None,
        webhook_secret=settings.webhook_secret.get() if settings.webhook_secret else None,
    )
    pruning = asyncio.create_task(
        _prune_forever(feedback_log, settings.retention_days, settings.data_dir)
    )
    inbox_pruning = asyncio.create_task(inbox.prune_forever())
    try:
        if model_path is None:
            logger.info(
                "first start: the model workers export the bundled default model to %s "
                "(once per data folder, a few seconds)",
                settings.models_dir,
            )
        logger.info("starting the model workers")
        # SIGTERM while the workers start (the fork server importing torch, a model loading)
        # stops at once: the start is cancelled, which kills the workers started so far.
        if not await _unless_stopped(classifier.start(), stop):
            logger.info("stopping while starting: the model workers were not ready yet")
            return 0
        if model_path is None and not await _unless_stopped(
            serve_exported_default(classifier, registry), stop
        ):
            logger.info("stopping while starting: the model workers were not ready yet")
            return 0
        port = await web.start(settings.http_host, settings.port)
        logger.info("health and metrics on http://%s:%d", settings.http_host, port)
        async with application:
            await application.start()
            # What a crash left unhandled goes first, in order, before any new update.
            await inbox.replay(application.update_queue, application.bot)
            if webhook:
                assert settings.webhook_url and settings.webhook_secret
                await application.bot.set_webhook(
                    settings.webhook_url,
                    secret_token=settings.webhook_secret.get(),
                    allowed_updates=Update.ALL_TYPES,
                )
                logger.info("webhook mode: Telegram posts updates to %s", settings.webhook_url)
            else:
                assert application.updater is not None
                await application.updater.start_polling(drop_pending_updates=False)
            await set_command_menus(application, settings.admin_ids)
            inbox.tell_if_unavailable()
            logger.info(
                "bot @%s ready in %.1f s (model %s)",
                application.bot.username,
                time.monotonic() - started,
                classifier.model_name,
            )
            if sandbox is not None:
                _print_sandbox_help(sandbox.url, settings.sandbox_host)
            await stop.wait()
            # SIGTERM: take no new updates, answer what was received, then stop the workers.
            logger.info("stopping: no new updates; finishing what is in progress")
            # A training run would hold the stop for its whole length: it is cancelled.
            await cancel_retraining_for_shutdown(services)
            if webhook:
                await web.stop()  # Telegram keeps undelivered updates and retries them later
            elif application.updater is not None:
                await application.updater.stop()
            await application.stop()
    finally:
        pruning.cancel()
        inbox_pruning.cancel()
        await web.stop()
        await classifier.close()
        await inbox.close()
        await feedback_log.close()
        await services.downloads.aclose()
        if sandbox is not None:
            await sandbox.stop()
    logger.info("stopped cleanly")
    return 0


async def _unless_stopped(step: Awaitable[object], stop: asyncio.Event) -> bool:
    """Run a start-up step unless `stop` is set first, then cancel it; whether it completed
    (its error, if it failed, is raised)."""
    task = asyncio.ensure_future(step)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _prune_forever(log: PrivacyLog, retention_days: float, data_dir: Path) -> None:
    """Apply the retention period at start and then every six hours: to the feedback log,
    and to the zips /export left in DATA_DIR/exports."""
    older_than_s = retention_days * 86400
    while True:
        try:
            removed = await log.prune(older_than_s=older_than_s)
            if removed:
                logger.info("retention: removed %d undisputed answer(s)", removed)
        except Exception:
            logger.exception("retention pruning failed; trying again later")
        try:
            zips = await asyncio.to_thread(
                delete_export_archives, data_dir, older_than_s=older_than_s
            )
            if zips:
                logger.info("retention: removed %d export zip(s)", zips)
        except OSError:
            logger.exception("retention: could not remove old export zips; trying again later")
        await asyncio.sleep(6 * 3600)


def choose_model(settings: Settings, registry: Registry) -> Path | None:
    """MODEL_PATH when set; else the registry's active version (sha256 checked); else None,
    which makes the workers export the bundled default (`serve_exported_default` then
    registers it).

    An export of the default lying beside the versions (left by an earlier release, or by a
    start that stopped before registering it) is registered now when no version is active, and
    removed when the default is registered already: the data folder holds each model once.
    """
    if settings.model_path is not None:
        logger.info(
            "using MODEL_PATH %s (the registry's active version is ignored)", settings.model_path
        )
        return settings.model_path
    active = registry.active()
    export = registry.models_dir / DEFAULT_MODEL_FILE
    if export.is_file():
        default = registry.default()
        if default is not None:
            export.unlink()
            logger.info("removed %s: the bundled default is version %s", export, default.version)
        elif active is None:
            active = adopt_default_export(registry)
    return None if active is None else registry.path_for(active)


def adopt_default_export(registry: Registry) -> ModelCard:
    """Register the exported bundled default (moved into the registry, not copied); its card.

    It becomes the active version when it is the first one. The registry holds versions but
    none is active only after `training import --no-activate` into an empty data folder: the
    default is then served without being activated, and the log says how to switch.
    """
    others = registry.versions()
    card = registry.register_default(registry.models_dir / DEFAULT_MODEL_FILE)
    if not others:
        registry.activate(card)
        logger.info("registered the bundled default model as %s, the active version", card.version)
    else:
        logger.warning(
            "no model version is active: serving the bundled default model (%s). Not active: "
            "%s; switch with /use VERSION (admins, in the chat) or "
            "`python -m training use VERSION`",
            card.version,
            ", ".join(other.version for other in others),
        )
    return card


async def serve_exported_default(classifier: Classifier, registry: Registry) -> None:
    """The workers exported the bundled default: register it, then serve the registered file,
    so that a replaced worker loads that file instead of exporting the model again."""
    card = await asyncio.to_thread(adopt_default_export, registry)
    checked = await asyncio.to_thread(registry.checked_model, card)
    try:
        await classifier.swap(checked.path, checked.sha256)
    except ModelLoadError as exc:
        logger.error("version %s did not load (%s); serving the export", card.version, exc)


def build_classifier(settings: Settings, model_path: Path | None) -> Classifier:
    """The worker pool, sized for this machine unless the settings say otherwise."""
    gpus = count_gpus() if settings.inference_device in ("auto", "cuda") else 0
    if settings.inference_device == "cuda" and not gpus:
        logger.warning("INFERENCE_DEVICE=cuda but no NVIDIA GPU is visible; using the CPU")
    cpus = available_cpus()
    overrides = {
        name: value
        for name, value in (
            ("workers", settings.workers),
            ("max_batch", settings.max_batch),
            ("max_wait_ms", settings.max_wait_ms),
            ("queue_size", settings.queue_size),
        )
        if value is not None
    }
    pool = PoolConfig.for_machine(
        max(1, cpus // settings.inference_threads),
        gpus,
        timeout_s=settings.classify_timeout,
        **overrides,
    )
    worker = WorkerConfig(
        models_dir=settings.models_dir,
        model_path=model_path,
        threads=settings.inference_threads,
        max_pixels=settings.max_image_pixels,
        top_k=settings.top_k,
        device="cuda" if gpus else "cpu",
        log_level="DEBUG" if settings.log_level == "DEBUG" else "WARNING",
    )
    logger.info(
        "pool: %d worker(s) × %d thread(s) on %s, batches of up to %d",
        pool.workers,
        worker.threads,
        worker.device,
        pool.max_batch,
    )
    return Classifier(worker, pool)


def count_gpus() -> int:
    """NVIDIA GPUs the driver shows, without importing torch in the bot process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's `--cpus`, compose's `cpus:`) rounded down; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return cpus


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup and its ancestors; None when
    there is none. Reads cgroup v2's `cpu.max` and v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
    """
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2
            if (cgroup_root / "cgroup.controllers").is_file():
                for folder in _cgroup_folders(cgroup_root, path):
                    quotas.extend(_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1, mounted as cpu or cpu,cpuacct
            for mount in (cgroup_root / "cpu", cgroup_root / controllers):
                if mount.is_dir():
                    for folder in _cgroup_folders(mount, path):
                        quotas.extend(_v1_quota(folder))
                    break
    return min(quotas, default=None)


def _cgroup_folders(mount: Path, path: str) -> Iterator[Path]:
    """The folder of the cgroup at `path` under `mount`, then its ancestors up to `mount`.
    Inside a container the mount is often the container's own cgroup, which /proc still
    names by its host path: then only the mount itself is read."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        folder = mount
    while True:
        yield folder
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, _, period = cpu_max.read_text(encoding="utf-8").partition(" ")
        if quota.strip() == "max":
            return []
        return [int(quota) / int(period)]
    except (OSError, ValueError, ZeroDivisionError):
        return []


def _v1_quota(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def data_dir_problem(data_dir: Path) -> str | None:
    """Why this process could not write under DATA_DIR, with what to do; None when it can.

    The usual cause is a host folder mounted into the container (`./data:/data`) that belongs
    to another user than the image's. Checks without creating anything.
    """
    wanted = [
        data_dir,
        feedback_dir(data_dir),
        database_path(data_dir),
        feedback_dir(data_dir) / IMAGES_FOLDER,
        models_dir(data_dir),
    ]
    present = [path for path in wanted if path.exists()]
    if not present:  # nothing yet: it is created in the nearest folder that exists
        present = [next(parent for parent in data_dir.absolute().parents if parent.exists())]
    for path in present:
        mode = os.W_OK | (os.X_OK if path.is_dir() else os.R_OK)
        if not os.access(path, mode):
            uid, gid = os.getuid(), os.getgid()
            return (
                f"DATA_DIR {data_dir} is not writable: this process (uid {uid}, gid {gid}) "
                f"cannot write {path}.\nA folder mounted from the host (e.g. ./data:/data) "
                f"must belong to that user: run `sudo chown -R {uid}:{gid} ./data` on the "
                "host, or use the named volume of docker-compose.yml (verdict-data)."
            )
    return None


def _print_sandbox_help(url: str, host: str) -> None:
    from sandbox.server import is_loopback

    lan = ""
    if not is_loopback(host):
        port = url.rsplit(":", 1)[1]
        lan = (
            f"From a phone on the same network: http://{_lan_address()}:{port} "
            "(anyone on the network can use the bot)\n"
        )
    print(
        f"\nOpen {url} to chat with your bot (sandbox — no Telegram needed)\n{lan}"
        "\nOr send it a photo from another shell and read its answer:\n"
        f'  curl -s -F photo=@your-photo.jpg "{url}/_sandbox/send?wait=60"\n'
        "Or a command:\n"
        f'  curl -s -d text=/help "{url}/_sandbox/send?wait=10"\n'
        "Stop with Ctrl-C.\n",
        flush=True,
    )


def _lan_address() -> str:
    """This machine's address on its local network, as a phone there would reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # A UDP "connect" sends nothing: it only asks the kernel which source address the
            # route to a private address would use.
            probe.connect(("10.255.255.255", 1))
            address: str = probe.getsockname()[0]
        except OSError:
            return "<this machine's address>"
    return address


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
