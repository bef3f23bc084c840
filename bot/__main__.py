"""`python -m bot`: run the bot against Telegram, or against the local sandbox without a token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from pathlib import Path

from telegram import Update

from bot.access import set_command_menus
from bot.app import build_application
from bot.buildinfo import version_line
from bot.compiling import BackgroundCompile, needs_compiling
from bot.config import ConfigError, Secret, Settings, load_settings
from bot.context import Services
from bot.inbox import Inbox
from bot.logs import RedactFilter, configure_logging
from bot.metrics import Metrics
from bot.retrain import cancel_retraining_for_shutdown
from bot.startup import build_classifier, choose_model, data_dir_problem, serve_exported_default
from bot.versions import follow_active_version
from bot.web import WebServer
from model.feedback import PrivacyLog, SqliteFeedbackLog
from model.feedback.export import delete_export_archives
from model.feedback.health import FeedbackUnavailable
from model.registry import Registry, RegistryError

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
        served = choose_model(settings, registry)
    except RegistryError as exc:
        logger.error("cannot load the active model: %s", exc)
        print(f"Model registry error: {exc}", file=sys.stderr)
        return 2
    classifier = build_classifier(settings, served)
    compiler = BackgroundCompile(settings, registry, classifier)
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
    following = (
        asyncio.create_task(follow_active_version(services))
        if settings.inference_url is not None
        else None
    )
    try:
        if served is None:
            logger.info(
                "first start: the model workers export the bundled default model to %s "
                "(once per data folder, a few seconds)",
                settings.models_dir,
            )
        port = None
        if settings.inference_url is not None:
            # The replicas fetch the model from this server while the classifier starts.
            port = await web.start(settings.http_host, settings.port)
            logger.info(
                "health and metrics on http://%s:%d (and model files for the cluster)",
                settings.http_host,
                port,
            )
        logger.info("starting the model workers")
        # SIGTERM while the workers start (the fork server importing torch, a model loading)
        # stops at once: the start is cancelled, which kills the workers started so far.
        if not await _unless_stopped(classifier.start(), stop):
            logger.info("stopping while starting: the model workers were not ready yet")
            return 0
        if served is None and not await _unless_stopped(
            serve_exported_default(classifier, registry), stop
        ):
            logger.info("stopping while starting: the model workers were not ready yet")
            return 0
        if port is None:
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
                classifier.model_name or "not served yet",
            )
            if sandbox is not None:
                _print_sandbox_help(sandbox.url, settings.sandbox_host)
            # The bundled default just exported, or a version from an earlier release.
            with contextlib.suppress(RegistryError):
                active = await asyncio.to_thread(registry.active)
                if needs_compiling(settings, active) and active is not None:
                    compiler.start(active.version)
            await stop.wait()
            # SIGTERM: take no new updates, answer what was received, then stop the workers.
            logger.info("stopping: no new updates; finishing what is in progress")
            # A training run would hold the stop for its whole length: it is cancelled.
            await cancel_retraining_for_shutdown(services)
            await compiler.stop()
            if webhook:
                await web.stop()  # Telegram keeps undelivered updates and retries them later
            elif application.updater is not None:
                await application.updater.stop()
            await application.stop()
    finally:
        pruning.cancel()
        inbox_pruning.cancel()
        if following is not None:
            following.cancel()
        await compiler.stop()
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
