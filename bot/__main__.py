"""`python -m bot`: run the bot against Telegram, or against the local sandbox without a token."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

from telegram import Update

from bot.access import set_command_menus
from bot.app import build_application
from bot.config import ConfigError, Secret, Settings, load_settings
from bot.context import Services
from bot.logs import RedactFilter, configure_logging
from bot.metrics import Metrics
from bot.web import WebServer
from model.default import DEFAULT_MODEL_FILE
from model.feedback import PrivacyLog, SqliteFeedbackLog
from model.pool import Classifier, PoolConfig
from model.registry import Registry, RegistryError
from model.worker import WorkerConfig

logger = logging.getLogger("bot")


def main() -> int:
    """Read the settings, then run until SIGTERM or Ctrl-C; returns the exit status."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Configuration error (check your environment or .env):\n{exc}", file=sys.stderr)
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
        sandbox = Sandbox(token, page_admin_id=page_admin_id)
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
    services = Services.create(
        settings, classifier, feedback_log, feedback_log.settings, metrics, registry
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
    pruning = asyncio.create_task(_prune_forever(feedback_log, settings.retention_days))
    try:
        logger.info("starting the model workers (the first start exports the default model)")
        await classifier.start()
        if model_path is None:
            # The worker exported the bundled default on first start: register it, so that
            # /use can always switch back to it.
            default = await asyncio.to_thread(
                registry.register_default, settings.models_dir / DEFAULT_MODEL_FILE
            )
            if await asyncio.to_thread(registry.active) is None:
                await asyncio.to_thread(registry.activate, default)
        port = await web.start(settings.http_host, settings.port)
        logger.info("health and metrics on http://%s:%d", settings.http_host, port)
        async with application:
            await application.start()
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
            if webhook:
                await web.stop()  # Telegram keeps undelivered updates and retries them later
            elif application.updater is not None:
                await application.updater.stop()
            await application.stop()
    finally:
        pruning.cancel()
        await web.stop()
        await classifier.close()
        await feedback_log.close()
        if sandbox is not None:
            await sandbox.stop()
    logger.info("stopped cleanly")
    return 0


async def _prune_forever(log: PrivacyLog, retention_days: float) -> None:
    """Apply the retention period at start and then every six hours."""
    while True:
        try:
            removed = await log.prune(older_than_s=retention_days * 86400)
            if removed:
                logger.info("retention: removed %d undisputed answer(s)", removed)
        except Exception:
            logger.exception("retention pruning failed; trying again later")
        await asyncio.sleep(6 * 3600)


def choose_model(settings: Settings, registry: Registry) -> Path | None:
    """MODEL_PATH when set; else the registry's active version (sha256 checked); else None,
    which makes the worker export and use the bundled default."""
    if settings.model_path is not None:
        logger.info(
            "using MODEL_PATH %s (the registry's active version is ignored)", settings.model_path
        )
        return settings.model_path
    active = registry.active()
    return None if active is None else registry.path_for(active)


def build_classifier(settings: Settings, model_path: Path | None) -> Classifier:
    """The worker pool, sized for this machine unless the settings say otherwise."""
    gpus = count_gpus() if settings.inference_device in ("auto", "cuda") else 0
    if settings.inference_device == "cuda" and not gpus:
        logger.warning("INFERENCE_DEVICE=cuda but no NVIDIA GPU is visible; using the CPU")
    cpus = len(os.sched_getaffinity(0))
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
    sys.exit(main())
