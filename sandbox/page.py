"""The sandbox's chat page: a Telegram-like chat in the browser, served at ``/``.

The page (``static/index.html``, ``app.js``, ``style.css``: plain files, no build step) talks
only to the test API under ``/_sandbox/``, so the bot cannot tell a page user from a Telegram
user. Everything it needs is served from here: no fonts, scripts or images from the internet,
and its Content-Security-Policy forbids loading any.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable

from aiohttp import web

#: The page's files and their content types; nothing else under static/ is served.
STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
}
#: Only this origin; blob: for previews of photos being sent, data: for the favicon fallback.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Always revalidate: a newer version of the page must not meet an older app.js.
    "Cache-Control": "no-cache",
}


def _static_dir() -> Traversable:
    """The packaged static/ folder (works from a checkout and from an installed wheel)."""
    return importlib.resources.files(__package__ or "sandbox").joinpath("static")


class ChatPage:
    """Route handlers for ``/`` and ``/static/{name}``."""

    def __init__(self) -> None:
        self._dir = _static_dir()

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp route table of the page."""
        return [
            web.get("/", self.index),
            web.get("/static/{name}", self.static),
            web.get("/favicon.ico", self.favicon),
        ]

    def _serve(self, name: str) -> web.Response:
        """One of STATIC_FILES, or 404."""
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound(text="not found")
        body = self._dir.joinpath(name).read_bytes()
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers=_HEADERS
        )

    async def index(self, request: web.Request) -> web.Response:
        """GET /: the chat page."""
        return self._serve("index.html")

    async def static(self, request: web.Request) -> web.Response:
        """GET /static/{name}: the page's script, style sheet and icon."""
        return self._serve(request.match_info["name"])

    async def favicon(self, request: web.Request) -> web.Response:
        """GET /favicon.ico: browsers ask for it whatever the page says; answer the icon."""
        return self._serve("icon.svg")
