"""The sandbox server: an aiohttp app that stands in for the Telegram Bot API."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

# The one place the token is scrubbed, shared with the bot: a stdlib-only leaf module, and the
# only thing the sandbox takes from the bot.
from bot.logs import RedactFilter
from sandbox.botapi import BotApi
from sandbox.page import ChatPage
from sandbox.state import JSONDict, SandboxState
from sandbox.testapi import DEFAULT_USER_ID, Impersonation, TestApi, is_cross_origin

logger = logging.getLogger(__name__)

DEFAULT_BOT_USERNAME = "verdict_sandbox_bot"
DEFAULT_BOT_FIRST_NAME = "Verdict"
DEFAULT_DOWNLOAD_LIMIT_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 60 * 1024 * 1024
#: Long polls are woken on stop, so in-flight requests finish almost at once.
SHUTDOWN_TIMEOUT_SECONDS = 5.0
_TOKEN_FORBIDDEN = frozenset("/?#% \t\r\n")


#: aiohttp's own loggers; aiohttp.server logs raw request lines (with the token) on bad input.
_AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _url_host(host: str) -> str:
    """The host to put in the sandbox's base URL for a bind address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host:
        return f"[{host}]"
    return host


#: What another site's page may open, besides "/": the chat page's files (not the APIs).
_PAGE_PREFIXES = ("/static/", "/favicon.ico")


@web.middleware
async def _same_origin_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse what another web site's page sends here (any page open in the same browser can
    reach 127.0.0.1): the Bot API and the test API answer this origin and non-browsers only."""
    path = request.path
    is_page = path == "/" or path.startswith(_PAGE_PREFIXES)
    if not is_page and is_cross_origin(request):
        logger.warning(
            "sandbox: refused a cross-origin %s request (Origin %r, Sec-Fetch-Site %r)",
            request.method,
            request.headers.get("Origin", "")[:100],
            request.headers.get("Sec-Fetch-Site", "")[:30],
        )
        return web.json_response(
            {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: cross-origin requests are refused",
            },
            status=403,
        )
    response: web.StreamResponse = await handler(request)
    return response


class Sandbox:
    """A local stand-in for the Telegram Bot API plus a test API to play the user."""

    def __init__(
        self,
        token: str,
        *,
        bot_id: int | None = None,
        bot_username: str = DEFAULT_BOT_USERNAME,
        bot_first_name: str = DEFAULT_BOT_FIRST_NAME,
        download_limit_bytes: int = DEFAULT_DOWNLOAD_LIMIT_BYTES,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        page_admin_id: int | None = None,
        admin_ids: Iterable[int] = (),
        for_tests: bool = False,
    ) -> None:
        """A sandbox for `token`; the chat page plays `page_admin_id` when switched to admin.

        `page_admin_id` is one of the bot's admins (e.g. from ADMIN_IDS); None offers no switch.
        `admin_ids`: all of the bot's admins, whom the test API never plays (but the page's
        admin, from the page). `for_tests`: the test API plays anyone, admins included, for
        whoever asks; only for tests, never for a sandbox a browser can reach. Requests another
        web site's page makes are refused either way.
        """
        if page_admin_id is not None and page_admin_id <= 0:
            raise ValueError("page_admin_id must be a positive user id")
        if not token or any(char in _TOKEN_FORBIDDEN for char in token):
            raise ValueError("the sandbox token must be non-empty and URL-path safe")
        if bot_id is None:
            head = token.split(":", 1)[0]
            if not head.isdigit():
                raise ValueError("cannot derive bot_id from the token; pass bot_id explicitly")
            bot_id = int(head)
        # On aiohttp's loggers while serving; also cleans what the sandbox logs itself.
        self._log_filter = RedactFilter([token])
        self._state = SandboxState(
            {"id": bot_id, "is_bot": True, "first_name": bot_first_name, "username": bot_username}
        )
        self._bot_api = BotApi(self._state, token, download_limit_bytes=download_limit_bytes)
        info: JSONDict = {
            "download_limit_bytes": download_limit_bytes,
            "max_upload_bytes": max_upload_bytes,
            # The chat page's identities; each has its private chat (chat id == user id).
            "page_user_id": DEFAULT_USER_ID,
            "page_admin_id": page_admin_id,
        }
        impersonation = Impersonation(frozenset(admin_ids), page_admin_id, for_tests)
        self._test_api = TestApi(self._state, info, impersonation)
        self._app = web.Application(
            client_max_size=max_upload_bytes,
            middlewares=[_same_origin_middleware, self._error_middleware()],
        )
        self._app.add_routes(
            [
                web.get("/bot{token}/{method}", self._bot_api.handle),
                web.post("/bot{token}/{method}", self._bot_api.handle),
                web.get("/file/bot{tail:.+}", self._bot_api.handle_file),
                *self._test_api.routes(),
                *ChatPage().routes(),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._stopped = False

    @property
    def app(self) -> web.Application:
        """The aiohttp application (usable with aiohttp's test utilities)."""
        return self._app

    @property
    def state(self) -> SandboxState:
        """The in-memory state (for inspection from the same event loop)."""
        return self._state

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8088; only valid after start()."""
        if self._url is None:
            raise RuntimeError("the sandbox is not started")
        return self._url

    def redact(self, text: str) -> str:
        """Replace the bot token (plain or percent-encoded) in text by <token>."""
        return self._log_filter.redact(text)

    def _error_middleware(self) -> Any:
        """Middleware turning unexpected exceptions into JSON 500s, logged without the token."""

        @web.middleware
        async def errors(
            request: web.Request,
            handler: Any,
        ) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
                return response
            except web.HTTPException:
                raise
            except Exception as exc:
                details = "".join(traceback.format_exception(exc))
                logger.error(
                    "sandbox: internal error on %s %s\n%s",
                    request.method,
                    self.redact(request.path),
                    self.redact(details),
                )
                description = "Internal Server Error"
                return web.json_response(
                    {"ok": False, "error_code": 500, "description": description}, status=500
                )

        return errors

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving on host:port (0 picks a free port); return the base URL."""
        if self._runner is not None or self._stopped:
            raise RuntimeError("a Sandbox can be started only once")
        # access_log=None: aiohttp's access log would print request paths, which hold the token.
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        for name in _AIOHTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self._runner = runner
        actual_port = runner.addresses[0][1]
        self._url = f"http://{_url_host(host)}:{actual_port}"
        logger.info("sandbox: Bot API and test API (/_sandbox/) listening on %s", self._url)
        if not is_loopback(host):
            logger.warning(
                "sandbox: listening on %s, not only on this machine: anyone on your network can "
                "open the chat page, use the bot and read every chat of the sandbox",
                host or "all interfaces",
            )
        return self._url

    async def stop(self) -> None:
        """Wake all long polls and shut the server down."""
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        self._stopped = True
        self._state.close()
        await self._bot_api.close()
        try:
            await runner.cleanup()
        finally:
            for name in _AIOHTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)
        logger.info("sandbox: stopped")

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SandboxThread:
    """Runs a Sandbox on its own event loop in a background thread (for synchronous code)."""

    def __init__(
        self, token: str, host: str = "127.0.0.1", port: int = 0, **sandbox_kwargs: Any
    ) -> None:
        self._token = token
        self._host = host
        self._port = port
        self._kwargs = sandbox_kwargs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sandbox: Sandbox | None = None
        self._url: str | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running sandbox."""
        if self._url is None:
            raise RuntimeError("the sandbox thread is not started")
        return self._url

    @property
    def sandbox(self) -> Sandbox:
        """The Sandbox object (its state belongs to the background loop)."""
        if self._sandbox is None:
            raise RuntimeError("the sandbox thread is not started")
        return self._sandbox

    def start(self) -> str:
        """Start the thread and the server; return the base URL."""
        if self._thread is not None:
            raise RuntimeError("the sandbox thread is already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="verdict-sandbox", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self.url

    def _run(self, ready: threading.Event) -> None:
        """Thread body: start the sandbox, run the loop until stop(), then clean up."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            try:
                self._sandbox = Sandbox(self._token, **self._kwargs)
                self._url = loop.run_until_complete(self._sandbox.start(self._host, self._port))
            except BaseException as exc:
                self._error = exc
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self._sandbox.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self) -> None:
        """Stop the server and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None
        self._loop = None
        self._url = None

    def __enter__(self) -> SandboxThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
