"""The bot's own HTTP server (aiohttp): Telegram's webhook, /healthz, /readyz and /metrics;
with INFERENCE_URL set, also the model files the cluster's replicas fetch
(``GET /models/{version}/{file}``)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from telegram import Update
from telegram.error import TelegramError

from bot.buildinfo import versions
from bot.context import BotApp, Services
from model.registry import RegistryError, model_files

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_CHECK_TTL_S = 15.0


class WebServer:
    """Serves health and metrics always, and Telegram's updates in webhook mode."""

    def __init__(
        self,
        application: BotApp,
        services: Services,
        *,
        webhook_path: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self._application = application
        self._services = services
        self._webhook_secret = webhook_secret
        self._runner: web.AppRunner | None = None
        self._telegram_ok_at = 0.0
        self.port = 0
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        if webhook_path is not None:
            self.app.router.add_post(webhook_path, self.webhook)
        if services.settings.inference_url is not None:
            self.app.router.add_get("/models/{version}/{file}", self.model_file)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); returns the port."""
        # No access log: the webhook path is not secret, but scrapes every 15 s are noise.
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def webhook(self, request: web.Request) -> web.Response:
        """An update from Telegram: check the secret, then hand it to the application."""
        given = request.headers.get(SECRET_HEADER, "")
        expected = self._webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            logger.warning("webhook call with a wrong or missing secret token refused")
            return web.json_response({"ok": False, "description": "Forbidden"}, status=403)
        try:
            payload = await request.json()
            update = Update.de_json(payload, self._application.bot)
        except (json.JSONDecodeError, ValueError, KeyError, TypeError):
            return web.json_response({"ok": False, "description": "Bad update"}, status=400)
        if update is None:
            return web.json_response({"ok": False, "description": "Bad update"}, status=400)
        # Kept before the 200: a crash from here on replays it at the next start. A failure
        # that is not the disk's (a full disk is handled without keeping) makes Telegram retry.
        try:
            new = await self._services.inbox.receive_json(
                [(update.update_id, json.dumps(payload, ensure_ascii=False))]
            )
        except Exception:
            logger.exception(
                "webhook: could not keep update %d; Telegram retries", update.update_id
            )
            return web.json_response({"ok": False, "description": "Try again"}, status=500)
        if update.update_id not in new:  # sent again: already kept (replayed or done)
            return web.json_response({"ok": True})
        await self._application.update_queue.put(update)
        return web.json_response({"ok": True})

    async def model_file(self, request: web.Request) -> web.StreamResponse:
        """A registered version's learner or compiled form, for the cluster's replicas (which
        check its sha256 against the one the bot gave them). Nothing else in the data folder
        is reachable; with MODEL_TOKEN set, only with ``Authorization: Bearer <token>``."""
        token = self._services.settings.model_token
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token.get()}".encode()):
                logger.warning("model file request without the right MODEL_TOKEN refused")
                return web.json_response({"ok": False, "error": "forbidden"}, status=403)
        version, name = request.match_info["version"], request.match_info["file"]
        path = await asyncio.to_thread(self._servable, version, name)
        if path is None:
            return web.json_response({"ok": False, "error": "not_found"}, status=404)
        logger.info("a replica fetches %s/%s", version, name)
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    def _servable(self, version: str, name: str) -> Any:
        """The path of `name` in `version`'s folder when the card lists it, else None."""
        registry = self._services.registry
        try:
            card = registry.get(version)
        except RegistryError:
            return None
        if card.version != version:  # "active", "v3"...: only a folder's own name
            return None
        path = registry.version_dir(card) / name
        return path if name in model_files(card) and path.is_file() else None

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is alive and its event loop answers."""
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        """Workers warmed up and Telegram reachable; 503 with the reasons otherwise."""
        problems: list[str] = []
        stats = self._services.classifier.stats()
        if stats.unavailable:
            problems.append(stats.unavailable)
        elif stats.workers_ready < 1:
            problems.append("no model worker is ready")
        if not await self._telegram_reachable():
            problems.append("the Telegram Bot API is not reachable")
        body: dict[str, Any] = {
            "ready": not problems,
            # "sandbox": no TELEGRAM_TOKEN, serving the local stand-in (not Telegram);
            # "polling" or "webhook": on Telegram.
            "mode": self._services.settings.mode,
            "problems": problems,
            "model": stats.model,
            # What the workers run: "onnx", "onnx-int8" (the compiled forms) or "fastai".
            "backend": stats.backend,
            "workers_ready": stats.workers_ready,
            "queue_depth": stats.queue_depth,
            # On a Ray Serve cluster (INFERENCE_URL): each replica, its state and version.
            "replicas": [
                {
                    "replica": r.replica,
                    "state": r.state,
                    "version": r.version,
                    "backend": r.backend,
                    "ongoing": r.ongoing,
                }
                for r in stats.replicas
            ],
            # Verdict's, Python's and the libraries' versions (read from package metadata).
            "versions": versions(),
        }
        return web.json_response(body, status=200 if not problems else 503)

    async def _telegram_reachable(self) -> bool:
        if time.monotonic() - self._telegram_ok_at < TELEGRAM_CHECK_TTL_S:
            return True
        try:
            await self._application.bot.get_me(read_timeout=5, connect_timeout=5)
        except TelegramError:
            return False
        self._telegram_ok_at = time.monotonic()
        return True

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        body = generate_latest(self._services.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
