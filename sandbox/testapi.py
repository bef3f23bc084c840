"""The test API half of the sandbox (/_sandbox/...): play the user, inspect what the bot did.

All fields may come from the query string, a JSON body or a (multipart) form.

``POST /_sandbox/send``: user_id (1001), first_name ("Tester"), chat_id, chat_type
(private|group|supergroup), title, text, caption, kind (text|photo|document|sticker|video|
voice|animation; inferred from a ``photo`` part, a ``document`` part or ``text``),
media_group_id, reply_to_message_id, file_name, mime_type, file_size, wait, settle.
chat_id defaults to user_id for private chats and to -user_id for groups; without
chat_type an existing chat keeps its type, a new chat is private when chat_id == user_id
and a group otherwise; a private chat's id must equal user_id.
Answers ``{"ok", "update_id", "message", "replies"}``.

``POST /_sandbox/press``: user_id, chat_id (user_id), message_id, data, wait, settle.
Answers ``{"ok", "update_id", "callback_query_id", "answer", "messages"}``.

Who may play whom: a request another web site's page made (an ``Origin`` that is not the
sandbox's own, or ``Sec-Fetch-Site`` other than ``same-origin``/``none``) is refused with 403,
on the Bot API side too (see `is_cross_origin`). Unless the sandbox was started for tests, the
test API plays no admin but the chat page's own (``page_admin_id``), and that one only for the
chat page itself (a same-origin request): a script elsewhere on the machine can still play any
user, never the admin.

``POST /_sandbox/flood``: method, every, retry_after: every Nth call of the Bot API method is
answered 429. ``POST /_sandbox/fail``: method, times (1), error_code (400), description: the
next calls of the method fail (a file Telegram cannot serve right now, by default).

``GET /_sandbox/stream``: since (0), chat_id, heartbeat (15 s). The event log as Server-Sent
Events: each is ``id: <instance>-<seq>`` and ``data: <event JSON>`` (as ``/_sandbox/events``
returns), a comment line every ``heartbeat`` seconds keeps proxies and browsers from giving up,
and a browser that reconnects resumes after its ``Last-Event-ID``. When the log no longer
holds what the client saw (``POST reset``, or a restarted sandbox), an ``event: reset`` tells
it to reload the chat from ``GET chats/{chat_id}/messages``, which also answers its ``seq``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sandbox.botapi import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, document_json
from sandbox.media import (
    DEFAULT_MIME,
    DUMMY_MP4,
    DUMMY_OGG,
    NotAnImageError,
    dummy_sticker,
    guess_mime,
    image_dimensions,
    make_photo_sizes,
    safe_extension,
)
from sandbox.params import ApiError, JSONDict, Params, Upload, read_params
from sandbox.state import Chat, SandboxState, StoredFile, StoredMessage

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_USER_ID = 1001
DEFAULT_FIRST_NAME = "Tester"
#: After the awaited bot reply arrives, keep holding /send and /press until the bot has been
#: idle in the chat for this long, so a quick follow-up (answer + edit) is included.
DEFAULT_SETTLE_SECONDS = 0.25
MAX_WAIT_SECONDS = 300.0
#: A Server-Sent Events comment is written when a stream had nothing to say for this long.
HEARTBEAT_SECONDS = 15.0
#: The reconnection delay suggested to EventSource clients.
STREAM_RETRY_MS = 2000
CHAT_TYPES = ("private", "group", "supergroup")
KINDS = ("text", "photo", "document", "sticker", "video", "voice", "animation")
_COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{1,64})?")


def is_cross_origin(request: web.Request) -> bool:
    """Whether a browser says another site's page made the request (a form posted there, a
    fetch from there): every browser sends `Origin` on such a POST, and current ones
    `Sec-Fetch-Site` on every request; curl, httpx and python-telegram-bot send neither."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


def is_from_the_page(request: web.Request) -> bool:
    """Whether a browser says this origin's own page made the request (the chat page)."""
    if is_cross_origin(request):
        return False
    origin = request.headers.get("Origin")
    return request.headers.get("Sec-Fetch-Site") == "same-origin" or origin is not None


@dataclass(frozen=True)
class Impersonation:
    """Which users the test API may play.

    `admins`: the bot's admin ids (ADMIN_IDS; the page's admin among them); `page_admin_id`:
    the one the chat page plays; `for_tests`: any user at all, from anywhere (tests drive the
    bot as its admins; never for a sandbox a browser can reach).
    """

    admins: frozenset[int] = frozenset()
    page_admin_id: int | None = None
    for_tests: bool = False

    def check(self, request: web.Request, user_id: int) -> None:
        """Raise a 403 `SandboxError` unless `request` may act as `user_id`."""
        if self.for_tests or (user_id not in self.admins and user_id != self.page_admin_id):
            return
        if user_id != self.page_admin_id:
            raise SandboxError(
                f"user {user_id} is one of the bot's admins; the sandbox plays only the chat "
                "page's admin (page_admin_id)",
                403,
            )
        if not is_from_the_page(request):
            raise SandboxError(
                "only the chat page plays the admin (switch it on there); other clients play "
                "users",
                403,
            )


class SandboxError(Exception):
    """A test API error: {"ok": false, "description": ...} with an HTTP status."""

    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


def _error_response(status: int, description: str) -> web.Response:
    """A test API error response."""
    return web.json_response({"ok": False, "description": description}, status=status)


def _guard(handler: Handler) -> Handler:
    """Turn SandboxError/ApiError raised by a test API handler into JSON error responses."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SandboxError as exc:
            return _error_response(exc.status, exc.description)
        except ApiError as exc:
            description = exc.description.removeprefix("Bad Request: ")
            return _error_response(exc.code, description)

    return guarded


def command_entities(text: str) -> list[JSONDict]:
    """A bot_command entity for text that starts with a /command, as Telegram adds."""
    match = _COMMAND_RE.match(text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": match.end()}]


def _clamp_wait(value: float | None) -> float:
    """Clamp a wait/timeout parameter to [0, MAX_WAIT_SECONDS]."""
    return min(max(value or 0.0, 0.0), MAX_WAIT_SECONDS)


class TestApi:
    """Handlers for /_sandbox/* working on a SandboxState."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, state: SandboxState, info: JSONDict, impersonation: Impersonation | None = None
    ) -> None:
        self._state = state
        self._info = info
        self._impersonation = impersonation or Impersonation()

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp route table of the test API."""
        return [
            web.get("/_sandbox/info", _guard(self.info)),
            web.post("/_sandbox/send", _guard(self.send)),
            web.post("/_sandbox/press", _guard(self.press)),
            web.get("/_sandbox/chats", _guard(self.chats)),
            web.get("/_sandbox/chats/{chat_id}/messages", _guard(self.chat_messages)),
            web.get("/_sandbox/events", _guard(self.events)),
            web.get("/_sandbox/stream", _guard(self.stream)),
            web.get("/_sandbox/calls", _guard(self.calls)),
            web.get("/_sandbox/files/{file_id}", _guard(self.file)),
            web.post("/_sandbox/reset", _guard(self.reset)),
            web.post("/_sandbox/flood", _guard(self.set_flood)),
            web.post("/_sandbox/fail", _guard(self.set_fault)),
        ]

    async def set_fault(self, request: web.Request) -> web.Response:
        """POST /_sandbox/fail: answer the next `times` calls of `method` with an error.

        Fields: method (a Bot API method name), times (1; 0 turns it off), error_code (400),
        description (Telegram's for a file it cannot serve now).
        """
        params = Params(await read_params(request))
        method = (params.opt_str("method") or "").lower()
        if not method:
            raise SandboxError("method is required")
        times = params.opt_int("times")
        times = 1 if times is None else times
        code = params.opt_int("error_code") or 400
        if times < 0 or not 400 <= code <= 599:
            raise SandboxError("times must not be negative; error_code is 400 to 599")
        description = params.opt_str("description") or (
            "Bad Request: wrong file_id or the file is temporarily unavailable"
        )
        if times == 0:
            self._state.faults.pop(method, None)
        else:
            self._state.faults[method] = (times, code, description)
        return web.json_response(
            {"ok": True, "faults": {m: list(v) for m, v in self._state.faults.items()}}
        )

    async def set_flood(self, request: web.Request) -> web.Response:
        """POST /_sandbox/flood: answer every Nth call of `method` with 429 + retry_after.

        Fields: method (a Bot API method name), every (N; 0 turns it off), retry_after (s).
        """
        params = Params(await read_params(request))
        method = (params.opt_str("method") or "").lower()
        if not method:
            raise SandboxError("method is required")
        every = params.opt_int("every") or 0
        retry_after = params.opt_int("retry_after")
        if every < 0 or (retry_after is not None and retry_after < 0):
            raise SandboxError("every and retry_after must not be negative")
        if every == 0:
            self._state.flood.pop(method, None)
        else:
            self._state.flood[method] = (every, 1 if retry_after is None else retry_after)
        self._state.flood_counts[method] = 0
        return web.json_response(
            {"ok": True, "flood": {m: list(v) for m, v in self._state.flood.items()}}
        )

    # ------------------------------------------------------------------ views

    async def info(self, request: web.Request) -> web.Response:
        """GET /_sandbox/info: the bot user and limits."""
        return web.json_response(
            {
                "ok": True,
                **self._info,
                "bot": dict(self._state.bot_user),
                "seq": self._state.seq,
                "webhook_url": self._state.webhook_url,
            }
        )

    async def chats(self, request: web.Request) -> web.Response:
        """GET /_sandbox/chats: every known chat."""
        chats = [
            {
                **chat.to_json(),
                "message_count": sum(1 for m in chat.messages.values() if not m.deleted),
            }
            for chat in self._state.chats.values()
        ]
        return web.json_response({"ok": True, "chats": chats})

    async def chat_messages(self, request: web.Request) -> web.Response:
        """GET /_sandbox/chats/{chat_id}/messages: the chat's live messages in order."""
        try:
            chat_id = int(request.match_info["chat_id"])
        except ValueError:
            raise SandboxError("chat_id must be an integer") from None
        chat = self._state.chat(chat_id)
        if chat is None:
            raise SandboxError("chat not found", 404)
        messages = [
            self._state.message_view(message)
            for message in chat.messages.values()
            if not message.deleted
        ]
        return web.json_response({"ok": True, "seq": self._state.seq, "messages": messages})

    async def events(self, request: web.Request) -> web.Response:
        """GET /_sandbox/events?since=&timeout=&chat_id=: long poll for events."""
        params = Params(await read_params(request))
        since = params.opt_int("since") or 0
        chat_id = params.opt_int("chat_id")
        timeout = _clamp_wait(params.opt_float("timeout"))
        state = self._state
        if timeout > 0:
            await state.wait_until(lambda: bool(state.events_since(since, chat_id)), timeout)
        return web.json_response(
            {"ok": True, "seq": state.seq, "events": state.events_since(since, chat_id)}
        )

    async def calls(self, request: web.Request) -> web.Response:
        """GET /_sandbox/calls?method=: the log of Bot API calls."""
        method = (request.query.get("method") or "").lower()
        calls = [
            call for call in self._state.calls if not method or call["method"].lower() == method
        ]
        return web.json_response({"ok": True, "calls": calls})

    async def file(self, request: web.Request) -> web.Response:
        """GET /_sandbox/files/{file_id}: raw bytes of a stored file."""
        stored = self._state.files.get(request.match_info["file_id"])
        if stored is None:
            raise SandboxError("file not found", 404)
        # Users upload these files: never let one run as a page of this origin (an HTML
        # "document" opened in a tab), nor let the browser sniff it into something else.
        headers = {
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=3600",
        }
        return web.Response(body=stored.data, content_type=stored.mime_type, headers=headers)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET /_sandbox/stream?since=&chat_id=&heartbeat=: the event log as Server-Sent Events."""
        params = Params(dict(request.query))
        since = max(params.opt_int("since") or 0, 0)
        state = self._state
        stale = since > state.seq
        # Event ids are "<instance>-<seq>": a browser reconnecting after a restart of the
        # sandbox sends an id from another instance, and must reload rather than resume.
        last_event_id = request.headers.get("Last-Event-ID", "").strip()
        if last_event_id:
            instance, _, number = last_event_id.rpartition("-")
            if instance in ("", state.instance) and number.isdigit():
                since = int(number)
                stale = since > state.seq
            else:
                stale = True
        chat_id = params.opt_int("chat_id")
        heartbeat = params.opt_float("heartbeat")
        heartbeat = HEARTBEAT_SECONDS if heartbeat is None else min(max(heartbeat, 0.05), 60.0)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
            }
        )
        await response.prepare(request)
        resets = state.resets
        try:
            await response.write(f"retry: {STREAM_RETRY_MS}\n\n".encode())
            if stale:
                since = await self._write_reset(response)
            while not state.closing:
                if state.resets != resets:
                    resets = state.resets
                    since = await self._write_reset(response)
                events = state.events_since(since, chat_id)
                for event in events:
                    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
                    event_id = f"{state.instance}-{event['seq']}"
                    await response.write(f"id: {event_id}\ndata: {data}\n\n".encode())
                    since = event["seq"]
                if events:
                    continue
                news = functools.partial(self._stream_has_news, since, chat_id, resets)
                woken = await state.wait_until(news, heartbeat)
                if not woken and not state.closing:
                    await response.write(b": heartbeat\n\n")
        except ConnectionError:
            logger.debug("sandbox: an event stream client went away")
        return response

    def _stream_has_news(self, since: int, chat_id: int | None, resets: int) -> bool:
        """Whether a stream that sent everything up to `since` has something new to send."""
        return self._state.resets != resets or bool(self._state.events_since(since, chat_id))

    async def _write_reset(self, response: web.StreamResponse) -> int:
        """Tell a stream's client to reload; return the seq it resumes after."""
        seq = self._state.seq
        event_id = f"{self._state.instance}-{seq}"
        await response.write(f'id: {event_id}\nevent: reset\ndata: {{"seq":{seq}}}\n\n'.encode())
        return seq

    async def reset(self, request: web.Request) -> web.Response:
        """POST /_sandbox/reset: forget chats, updates, events and calls."""
        self._state.reset()
        logger.info("sandbox: state reset")
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------- send

    async def send(self, request: web.Request) -> web.Response:
        """POST /_sandbox/send: a user sends a message to the bot."""
        params = Params(await read_params(request))
        state = self._state
        user_id = params.opt_int("user_id")
        user_id = DEFAULT_USER_ID if user_id is None else user_id
        if user_id <= 0:
            raise SandboxError("user_id must be positive")
        self._impersonation.check(request, user_id)
        user = state.user(user_id, params.opt_str("first_name"))
        chat = self._resolve_chat(params, user_id, user["first_name"])

        kind = self._kind(params)
        content = await self._content(kind, params)
        media_group_id = params.opt_str("media_group_id")
        if media_group_id:
            content["media_group_id"] = media_group_id
        reply_to = params.opt_int("reply_to_message_id")
        if reply_to is not None and state.find_message(chat.id, reply_to) is None:
            raise SandboxError("reply_to_message_id: message not found")

        message = state.add_message(
            chat, sender=user, from_bot=False, content=content, reply_to=reply_to
        )
        payload = state.message_json(message)
        update_id = state.add_update("message", payload)
        logger.debug("sandbox: user %s sent a %s message in chat %s", user_id, kind, chat.id)

        wait = _clamp_wait(params.opt_float("wait"))
        if wait > 0:
            await self._hold(chat.id, wait, params, lambda: bool(state.replies_to(message)))
        replies = [state.message_view(reply) for reply in state.replies_to(message)]
        return web.json_response(
            {"ok": True, "update_id": update_id, "message": payload, "replies": replies}
        )

    async def _hold(
        self, chat_id: int, wait: float, params: Params, done: Callable[[], bool]
    ) -> None:
        """Hold a request until done() (then until the bot settles), at most wait seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        settle = params.opt_float("settle")
        settle = DEFAULT_SETTLE_SECONDS if settle is None else max(settle, 0.0)
        if await self._state.wait_until(done, wait) and settle > 0:
            await self._state.wait_quiet(chat_id, settle, deadline)

    def _resolve_chat(self, params: Params, user_id: int, first_name: str) -> Chat:
        """Find or create the chat for /send (see the module docs for defaults)."""
        chat_type = params.opt_str("chat_type")
        if chat_type is not None and chat_type not in CHAT_TYPES:
            raise SandboxError(f"chat_type must be one of {', '.join(CHAT_TYPES)}")
        chat_id = params.opt_int("chat_id")
        if chat_id is None:
            chat_id = user_id if chat_type in (None, "private") else -user_id
        existing = self._state.chat(chat_id)
        if chat_type is None:
            if existing is not None:
                chat_type = existing.type
            else:
                chat_type = "private" if chat_id == user_id else "group"
        if chat_type == "private" and chat_id != user_id:
            raise SandboxError("a private chat's id must equal the user's id")
        try:
            return self._state.ensure_chat(chat_id, chat_type, first_name, params.opt_str("title"))
        except ValueError as exc:
            raise SandboxError(str(exc)) from None

    @staticmethod
    def _kind(params: Params) -> str:
        """The message kind: given, or inferred from the photo/document parts or text."""
        kind = params.opt_str("kind")
        if kind:
            if kind not in KINDS:
                raise SandboxError(f"kind must be one of {', '.join(KINDS)}")
            return kind
        if params.has("photo"):
            return "photo"
        if params.has("document"):
            return "document"
        if params.has("text"):
            return "text"
        raise SandboxError("nothing to send: give text, a photo part or a document part")

    async def _content(self, kind: str, params: Params) -> JSONDict:
        """Build the message content for a user message of the given kind."""
        if kind == "text":
            text = params.opt_str("text")
            if text is None or not text.strip():
                raise SandboxError("text is empty")
            if len(text) > MAX_TEXT_LENGTH:
                raise SandboxError("text is too long")
            content: JSONDict = {"text": text}
            entities = command_entities(text)
            if entities:
                content["entities"] = entities
            return content
        if kind == "photo":
            content = {"photo": await self._user_photo(params)}
        elif kind == "document":
            content = {"document": document_json(self._user_document(params))}
        else:
            content = self._user_media(kind, params)
        caption = params.opt_str("caption")
        if caption:
            if len(caption) > MAX_CAPTION_LENGTH:
                raise SandboxError("caption is too long")
            content["caption"] = caption
            entities = command_entities(caption)
            if entities:
                content["caption_entities"] = entities
        return content

    async def _user_photo(self, params: Params) -> list[JSONDict]:
        """Store an uploaded photo as Telegram-like PhotoSizes."""
        photo = params.opt_file("photo")
        if isinstance(photo, str) and photo in self._state.photo_sets:
            return [dict(size) for size in self._state.photo_sets[photo]]
        if not isinstance(photo, Upload):
            raise SandboxError("photo must be a file part")
        try:
            renditions = await asyncio.to_thread(make_photo_sizes, photo.data)
        except NotAnImageError:
            raise SandboxError("not an image") from None
        return self._state.store_photo(renditions)

    def _user_document(self, params: Params) -> StoredFile:
        """Store an uploaded document untouched."""
        document = params.opt_file("document")
        if isinstance(document, str) and document in self._state.files:
            return self._state.files[document]
        if not isinstance(document, Upload):
            raise SandboxError("document must be a file part")
        file_name = params.opt_str("file_name") or document.filename or "file"
        mime = params.opt_str("mime_type") or document.content_type
        if not mime or mime == DEFAULT_MIME:
            mime = guess_mime(file_name)
        file_size = params.opt_int("file_size")
        if file_size is not None and file_size < 0:
            raise SandboxError("file_size must not be negative")
        return self._state.store_file(
            "documents",
            document.data,
            mime_type=mime,
            extension=safe_extension(file_name, mime),
            file_size=file_size,
            file_name=file_name,
        )

    def _user_media(self, kind: str, params: Params) -> JSONDict:
        """Minimal valid sticker/video/voice/animation objects backed by a stored file."""
        upload = params.opt_file(kind)
        if not isinstance(upload, Upload):
            upload = params.opt_file("file")
        data = upload.data if isinstance(upload, Upload) else None
        state = self._state
        if kind == "sticker":
            size = image_dimensions(data) if data else None
            width, height = size or (512, 512)
            stored = state.store_file(
                "stickers", data or dummy_sticker(), mime_type="image/webp", extension=".webp"
            )
            return {
                "sticker": {
                    **self._file_ref(stored),
                    "type": "regular",
                    "width": width,
                    "height": height,
                    "is_animated": False,
                    "is_video": False,
                    "emoji": "🙂",
                }
            }
        if kind == "voice":
            stored = state.store_file(
                "voice", data or DUMMY_OGG, mime_type="audio/ogg", extension=".oga"
            )
            return {"voice": {**self._file_ref(stored), "duration": 2, "mime_type": "audio/ogg"}}
        directory = "videos" if kind == "video" else "animations"
        stored = state.store_file(
            directory,
            data or DUMMY_MP4,
            mime_type="video/mp4",
            extension=".mp4",
            file_name=f"{kind}.mp4",
        )
        media = {
            **self._file_ref(stored),
            "width": 640 if kind == "video" else 320,
            "height": 360 if kind == "video" else 240,
            "duration": 3 if kind == "video" else 2,
            "file_name": stored.file_name,
            "mime_type": "video/mp4",
        }
        if kind == "video":
            return {"video": media}
        # Telegram also sets "document" on animation messages, for backward compatibility.
        return {"animation": media, "document": document_json(stored)}

    @staticmethod
    def _file_ref(stored: StoredFile) -> JSONDict:
        """file_id, file_unique_id and file_size of a stored file."""
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
        }

    # ------------------------------------------------------------------ press

    async def press(self, request: web.Request) -> web.Response:
        """POST /_sandbox/press: a user taps an inline button of a bot message."""
        params = Params(await read_params(request))
        state = self._state
        user_id = params.opt_int("user_id")
        user_id = DEFAULT_USER_ID if user_id is None else user_id
        self._impersonation.check(request, user_id)
        chat_id = params.opt_int("chat_id")
        chat_id = user_id if chat_id is None else chat_id
        message_id = params.opt_int("message_id")
        if message_id is None:
            raise SandboxError("message_id is required")
        data = params.opt_str("data")
        if data is None:
            raise SandboxError("data is required")
        message = state.find_message(chat_id, message_id)
        if message is None:
            raise SandboxError("message not found")
        if not message.from_bot:
            raise SandboxError("message was not sent by the bot")
        # forge=1 plays a modified client, which can send any callback_data at all.
        if not params.opt_bool("forge") and not self._has_button(message, data):
            raise SandboxError("message has no button with that callback_data")
        chat = state.chat(chat_id)
        assert chat is not None  # find_message succeeded
        user = state.user(user_id, params.opt_str("first_name"))
        query_id = state.new_callback(chat_id, message_id, user, data)
        record = state.callbacks[query_id]
        since = state.seq
        update_id = state.add_update(
            "callback_query",
            {
                "id": query_id,
                "from": user,
                "message": state.message_json(message),
                "chat_instance": chat.chat_instance,
                "data": data,
            },
        )
        logger.debug("sandbox: user %s pressed a button in chat %s", user_id, chat_id)

        wait = _clamp_wait(params.opt_float("wait"))
        if wait > 0:
            await self._hold(
                chat_id,
                wait,
                params,
                lambda: record.answered or bool(state.bot_messages_changed_since(chat_id, since)),
            )
        messages = [
            state.message_view(m) for m in state.bot_messages_changed_since(chat_id, since)
        ]
        return web.json_response(
            {
                "ok": True,
                "update_id": update_id,
                "callback_query_id": query_id,
                "answer": record.answer,
                "messages": messages,
            }
        )

    @staticmethod
    def _has_button(message: StoredMessage, data: str) -> bool:
        """Whether the message's inline keyboard has a button with that callback_data."""
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        return any(
            isinstance(button, dict) and button.get("callback_data") == data
            for row in rows
            for button in row
        )
