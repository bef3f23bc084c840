"""The Bot API half of the sandbox: /bot<token>/<method> and /file/bot<token>/<path>."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.media import NotAnImageError, guess_mime, make_photo_sizes, safe_extension
from sandbox.params import ApiError, JSONDict, Params, Upload, bad_request, read_params
from sandbox.state import Chat, SandboxState, StoredFile, StoredMessage

logger = logging.getLogger(__name__)

Method = Callable[[Params], Awaitable[Any]]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_ANSWER_TEXT_LENGTH = 200
MAX_COMMANDS = 100
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
SCOPE_TYPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


def json_error(code: int, description: str) -> web.Response:
    """A Bot API error response."""
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )


def _validate_button(button: Any) -> None:
    """Check one InlineKeyboardButton like Telegram does (the parts we model)."""
    if not isinstance(button, dict):
        raise bad_request(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
        )
    text = button.get("text")
    if not isinstance(text, str) or not text:
        raise bad_request("can't parse inline keyboard button: Text must be a non-empty String")
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if not any(key in button for key in _BUTTON_ACTIONS):
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )


def parse_reply_markup(params: Params) -> tuple[JSONDict | None, JSONDict | None]:
    """Validate reply_markup; return (inline keyboard for the message, other keyboard)."""
    markup = params.opt_obj("reply_markup", "reply keyboard markup")
    if markup is None:
        return None, None
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for row in rows:
            for button in row:
                _validate_button(button)
        if not any(rows):
            return None, None
        return {"inline_keyboard": rows}, None
    if any(key in markup for key in ("keyboard", "remove_keyboard", "force_reply")):
        return None, markup
    raise bad_request("can't parse reply keyboard markup JSON object")


def _check_text(text: str | None) -> str:
    """Validate a message text."""
    if text is None or not text.strip():
        raise bad_request("message text is empty")
    if len(text) > MAX_TEXT_LENGTH:
        raise bad_request("message is too long")
    return text


def _caption_content(params: Params) -> JSONDict:
    """The caption/caption_entities part of a media message's content."""
    caption = params.opt_str("caption")
    content: JSONDict = {}
    if caption:
        if len(caption) > MAX_CAPTION_LENGTH:
            raise bad_request("message caption is too long")
        content["caption"] = caption
        entities = params.opt_list("caption_entities", "caption entities")
        if entities:
            content["caption_entities"] = entities
    return content


def document_json(stored: StoredFile) -> JSONDict:
    """The Telegram Document object for a stored file."""
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_name": stored.file_name or "file",
        "mime_type": stored.mime_type,
        "file_size": stored.file_size,
    }


# Telegram retries a refused webhook delivery later; the sandbox does so after this long.
WEBHOOK_RETRY_SECONDS = 1.0


class BotApi:
    """Implements the Bot API methods on top of a SandboxState."""

    def __init__(self, state: SandboxState, token: str, *, download_limit_bytes: int) -> None:
        self._state = state
        self._token = token
        self._download_limit = download_limit_bytes
        self._webhook_secret = ""
        self._delivery: asyncio.Task[None] | None = None
        self._last_error: tuple[int, str] | None = None
        methods: list[tuple[str, Method]] = [
            ("getMe", self.get_me),
            ("logOut", self.log_out),
            ("close", self.log_out),
            ("getUpdates", self.get_updates),
            ("setWebhook", self.set_webhook),
            ("deleteWebhook", self.delete_webhook),
            ("getWebhookInfo", self.get_webhook_info),
            ("sendMessage", self.send_message),
            ("sendPhoto", self.send_photo),
            ("sendDocument", self.send_document),
            ("sendChatAction", self.send_chat_action),
            ("getFile", self.get_file),
            ("editMessageText", self.edit_message_text),
            ("editMessageCaption", self.edit_message_caption),
            ("editMessageReplyMarkup", self.edit_message_reply_markup),
            ("deleteMessage", self.delete_message),
            ("deleteMessages", self.delete_messages),
            ("answerCallbackQuery", self.answer_callback_query),
            ("setMyCommands", self.set_my_commands),
            ("getMyCommands", self.get_my_commands),
            ("deleteMyCommands", self.delete_my_commands),
            ("setChatMenuButton", self.set_chat_menu_button),
            ("getChatMenuButton", self.get_chat_menu_button),
        ]
        self._methods = {name.lower(): (name, method) for name, method in methods}

    # ------------------------------------------------------------------ routes

    def token_ok(self, token: str) -> bool:
        """Constant-time comparison of a token with the sandbox's token."""
        return hmac.compare_digest(token.encode(), self._token.encode())

    async def handle(self, request: web.Request) -> web.Response:
        """Route handler for /bot<token>/<method>."""
        if not self.token_ok(request.match_info["token"]):
            return json_error(401, "Unauthorized")
        entry = self._methods.get(request.match_info["method"].lower())
        if entry is None:
            logger.warning(
                "sandbox: Bot API method %r is not implemented; answering 404 (PTB raises "
                "InvalidToken for that)",
                request.match_info["method"][:64],
            )
            return json_error(404, "Not Found")
        name, method = entry
        try:
            params = Params(await read_params(request))
        except ApiError as exc:
            return json_error(exc.code, exc.description)
        self._state.record_call(name, params.loggable())
        logger.debug("bot api call: %s", name)
        flood = self._state.flood.get(name.lower())
        if flood is not None:
            every, retry_after = flood
            count = self._state.flood_counts.get(name.lower(), 0) + 1
            self._state.flood_counts[name.lower()] = count
            if count % every == 0:
                # What Telegram answers past its flood limits: nothing was done, try later.
                return web.json_response(
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": f"Too Many Requests: retry after {retry_after}",
                        "parameters": {"retry_after": retry_after},
                    },
                    status=429,
                )
        fault = self._state.faults.get(name.lower())
        if fault is not None:
            left, code, description = fault
            if left <= 1:
                del self._state.faults[name.lower()]
            else:
                self._state.faults[name.lower()] = (left - 1, code, description)
            return json_error(code, description)
        try:
            result = await method(params)
        except ApiError as exc:
            logger.debug("bot api call %s failed: %s", name, exc.description)
            return json_error(exc.code, exc.description)
        return web.json_response({"ok": True, "result": result})

    async def handle_file(self, request: web.Request) -> web.Response:
        """Route handler for /file/bot<token>/<file_path> (token may be percent-encoded)."""
        tail = urllib.parse.unquote(request.match_info["tail"])
        token, _, file_path = tail.partition("/")
        if not self.token_ok(token):
            return json_error(401, "Unauthorized")
        stored = self._state.files_by_path.get(file_path)
        if stored is None:
            return json_error(404, "Not Found")
        return web.Response(body=stored.data, content_type=stored.mime_type)

    # ----------------------------------------------------------------- helpers

    def _chat(self, params: Params) -> Chat:
        """The chat named by chat_id, or 400 chat not found."""
        chat = self._state.chat(params.chat_id())
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def _reply_to(self, params: Params, chat: Chat) -> int | None:
        """Resolve reply_parameters / reply_to_message_id to a message id in chat."""
        allow_missing = params.opt_bool("allow_sending_without_reply")
        reply = params.opt_obj("reply_parameters", "reply parameters")
        if reply is not None:
            message_id = reply.get("message_id")
            if isinstance(message_id, str) and message_id.strip().isdigit():
                message_id = int(message_id)
            if not isinstance(message_id, int) or isinstance(message_id, bool):
                raise bad_request("can't parse reply parameters JSON object")
            allow_missing = allow_missing or reply.get("allow_sending_without_reply") is True
            other_chat = reply.get("chat_id")
            if other_chat is not None and other_chat != chat.id:
                if allow_missing:
                    return None
                raise bad_request("message to be replied not found")
        else:
            message_id = params.opt_int("reply_to_message_id")
            if message_id is None:
                return None
        if self._state.find_message(chat.id, message_id) is None:
            if allow_missing:
                return None
            raise bad_request("message to be replied not found")
        return message_id

    def _send(self, params: Params, chat: Chat, content: JSONDict) -> JSONDict:
        """Common tail of the send* methods: reply, markup, store, return the Message."""
        reply_to = self._reply_to(params, chat)
        inline, keyboard = parse_reply_markup(params)
        message = self._state.add_message(
            chat,
            sender=self._state.bot_user,
            from_bot=True,
            content=content,
            reply_to=reply_to,
            reply_markup=inline,
            reply_keyboard=keyboard,
            parse_mode=params.opt_str("parse_mode"),
        )
        return self._state.message_json(message)

    def _known_file(self, file_id: str) -> StoredFile:
        """A stored file by file_id, or Telegram's error for unknown ids/URLs."""
        stored = self._state.files.get(file_id)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        return stored

    def _edit_target(self, params: Params) -> StoredMessage:
        """The bot message named by chat_id + message_id for editMessage*."""
        if params.has("inline_message_id") and not params.has("chat_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._chat(params)
        message_id = params.opt_int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = self._state.find_message(chat.id, message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return message

    def _apply_edit(
        self, params: Params, message: StoredMessage, content: JSONDict, markup: JSONDict | None
    ) -> JSONDict:
        """Apply an edit unless it changes nothing; return the edited Message."""
        parse_mode = params.opt_str("parse_mode")
        if (
            content == message.content
            and markup == message.reply_markup
            and parse_mode == message.parse_mode
        ):
            raise bad_request(NOT_MODIFIED)
        self._state.edit_message(
            message, content=content, reply_markup=markup, parse_mode=parse_mode
        )
        return self._state.message_json(message)

    # ----------------------------------------------------------------- methods

    async def get_me(self, params: Params) -> JSONDict:
        """getMe."""
        return {
            **self._state.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def log_out(self, params: Params) -> bool:
        """logOut and close: nothing to do locally."""
        return True

    async def get_updates(self, params: Params) -> list[JSONDict]:
        """getUpdates with offset confirmation, limit and long polling."""
        state = self._state
        if state.webhook_url:
            raise ApiError(CONFLICT_WEBHOOK, 409)
        offset = params.opt_int("offset") or 0
        limit = min(max(params.opt_int("limit") or 100, 1), 100)
        timeout = max(params.opt_float("timeout") or 0.0, 0.0)
        if offset > 0:
            state.confirm_updates(offset)
        generation = state.begin_poll()

        def ready() -> bool:
            return generation != state.poll_generation or bool(state.select_updates(offset, limit))

        if timeout > 0:
            await state.wait_until(ready, timeout)
        if generation != state.poll_generation:
            # A newer getUpdates call took over: the older one gets an empty batch.
            return []
        return state.select_updates(offset, limit)

    async def set_webhook(self, params: Params) -> bool:
        """setWebhook: from now on updates are POSTed to the URL, as Telegram does."""
        url = params.opt_str("url") or ""
        secret = params.opt_str("secret_token") or ""
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise bad_request("secret token contains unallowed characters")
        state = self._state
        state.webhook_url = url
        self._webhook_secret = secret
        if params.opt_bool("drop_pending_updates"):
            state.updates.clear()
        if url and self._delivery is None:
            self._delivery = asyncio.create_task(self._deliver_forever(), name="sandbox-webhook")
        state.notify()
        return True

    async def delete_webhook(self, params: Params) -> bool:
        """deleteWebhook."""
        self._state.webhook_url = ""
        if params.opt_bool("drop_pending_updates"):
            self._state.updates.clear()
        self._state.notify()
        return True

    async def get_webhook_info(self, params: Params) -> JSONDict:
        """getWebhookInfo, with the last delivery error as Telegram reports it."""
        info: JSONDict = {
            "url": self._state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._state.updates),
        }
        if self._last_error:
            info["last_error_date"], info["last_error_message"] = self._last_error
        return info

    async def close(self) -> None:
        """Stop delivering webhooks."""
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None

    async def _deliver_forever(self) -> None:
        """POST pending updates one by one, in order; keep an update until it is accepted."""
        state = self._state
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while not state.closing:
                await state.wait_until(lambda: bool(state.webhook_url and state.updates), 3600)
                if state.closing or not state.webhook_url or not state.updates:
                    continue
                update = state.updates[0]
                headers = {}
                if self._webhook_secret:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = self._webhook_secret
                try:
                    async with session.post(
                        state.webhook_url, json=update, headers=headers
                    ) as response:
                        status = response.status
                        reason = response.reason or ""
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, reason = 0, type(exc).__name__
                if 200 <= status < 300:
                    if state.updates and state.updates[0] is update:
                        state.updates.pop(0)
                    continue
                self._last_error = (
                    int(time.time()),
                    f"Wrong response from the webhook: {status} {reason}".strip(),
                )
                logger.debug("sandbox: webhook delivery failed (%s); retrying", status)
                await asyncio.sleep(WEBHOOK_RETRY_SECONDS)

    async def send_message(self, params: Params) -> JSONDict:
        """sendMessage."""
        chat = self._chat(params)
        content: JSONDict = {"text": _check_text(params.opt_str("text"))}
        entities = params.opt_list("entities")
        if entities:
            content["entities"] = entities
        return self._send(params, chat, content)

    async def send_photo(self, params: Params) -> JSONDict:
        """sendPhoto with an upload or an existing file_id."""
        chat = self._chat(params)
        photo = params.opt_file("photo")
        if photo is None:
            raise bad_request("there is no photo in the request")
        caption = _caption_content(params)
        if isinstance(photo, Upload):
            sizes = await self._photo_sizes(photo.data)
        elif photo in self._state.photo_sets:
            sizes = self._state.photo_sets[photo]
        else:
            sizes = await self._photo_sizes(self._known_file(photo).data)
        content: JSONDict = {"photo": [dict(size) for size in sizes], **caption}
        if params.opt_bool("has_spoiler"):
            content["has_media_spoiler"] = True
        if params.opt_bool("show_caption_above_media"):
            content["show_caption_above_media"] = True
        return self._send(params, chat, content)

    async def _photo_sizes(self, data: bytes) -> list[JSONDict]:
        """Decode and re-encode a photo off the event loop, then store its sizes."""
        try:
            renditions = await asyncio.to_thread(make_photo_sizes, data)
        except NotAnImageError:
            raise bad_request("IMAGE_PROCESS_FAILED") from None
        return self._state.store_photo(renditions)

    async def send_document(self, params: Params) -> JSONDict:
        """sendDocument with an upload or an existing file_id."""
        chat = self._chat(params)
        document = params.opt_file("document")
        if document is None:
            raise bad_request("there is no document in the request")
        caption = _caption_content(params)
        if isinstance(document, Upload):
            file_name = document.filename or "file"
            mime = document.content_type
            if not mime or mime == "application/octet-stream":
                mime = guess_mime(file_name)
            stored = self._state.store_file(
                "documents",
                document.data,
                mime_type=mime,
                extension=safe_extension(file_name, mime),
                file_name=file_name,
            )
        else:
            stored = self._known_file(document)
        content: JSONDict = {"document": document_json(stored), **caption}
        return self._send(params, chat, content)

    async def send_chat_action(self, params: Params) -> bool:
        """sendChatAction."""
        chat = self._chat(params)
        action = params.opt_str("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._state.emit("chat_action", chat.id, from_bot=True, action=action)
        return True

    async def get_file(self, params: Params) -> JSONDict:
        """getFile: refuses files above the download limit like Telegram."""
        file_id = params.opt_str("file_id")
        stored = self._state.files.get(file_id or "")
        if stored is None:
            raise bad_request("wrong file_id or the file is temporarily unavailable")
        if stored.file_size > self._download_limit:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    async def edit_message_text(self, params: Params) -> JSONDict:
        """editMessageText (omitting reply_markup removes the inline keyboard, as Telegram)."""
        message = self._edit_target(params)
        text = _check_text(params.opt_str("text"))
        if "text" not in message.content:
            raise bad_request("there is no text in the message to edit")
        content: JSONDict = {"text": text}
        entities = params.opt_list("entities")
        if entities:
            content["entities"] = entities
        inline, _ = parse_reply_markup(params)
        return self._apply_edit(params, message, content, inline)

    async def edit_message_caption(self, params: Params) -> JSONDict:
        """editMessageCaption."""
        message = self._edit_target(params)
        if not message.has_media:
            raise bad_request("there is no caption in the message to edit")
        content = {
            key: value
            for key, value in message.content.items()
            if key not in ("caption", "caption_entities")
        }
        content.update(_caption_content(params))
        inline, _ = parse_reply_markup(params)
        return self._apply_edit(params, message, content, inline)

    async def edit_message_reply_markup(self, params: Params) -> JSONDict:
        """editMessageReplyMarkup."""
        message = self._edit_target(params)
        inline, _ = parse_reply_markup(params)
        if inline == message.reply_markup:
            raise bad_request(NOT_MODIFIED)
        self._state.edit_message(
            message, content=message.content, reply_markup=inline, parse_mode=message.parse_mode
        )
        return self._state.message_json(message)

    async def delete_message(self, params: Params) -> bool:
        """deleteMessage."""
        chat = self._chat(params)
        message = self._state.find_message(chat.id, params.req_int("message_id"))
        if message is None:
            raise bad_request("message to delete not found")
        self._state.delete_message(message, by_bot=True)
        return True

    async def delete_messages(self, params: Params) -> bool:
        """deleteMessages: deletes those of the listed messages that exist."""
        chat = self._chat(params)
        ids = params.opt_list("message_ids", "message_ids")
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise bad_request("message identifiers are not specified")
        for message_id in ids:
            message = self._state.find_message(chat.id, message_id)
            if message is not None:
                self._state.delete_message(message, by_bot=True)
        return True

    async def answer_callback_query(self, params: Params) -> bool:
        """answerCallbackQuery: each query can be answered once."""
        query_id = params.opt_str("callback_query_id") or ""
        record = self._state.callbacks.get(query_id)
        if record is None or record.answered:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = params.opt_str("text")
        if text is not None and len(text) > MAX_ANSWER_TEXT_LENGTH:
            raise bad_request("MESSAGE_TOO_LONG")
        answer: JSONDict = {"text": text, "show_alert": params.opt_bool("show_alert")}
        url = params.opt_str("url")
        if url:
            answer["url"] = url
        record.answered = True
        record.answer = answer
        self._state.emit(
            "callback_answer",
            record.chat_id,
            from_bot=True,
            callback_query_id=query_id,
            answer=answer,
        )
        return True

    def _scope(self, params: Params) -> JSONDict | None:
        """Validate the optional BotCommandScope."""
        scope = params.opt_obj("scope", "BotCommandScope")
        if scope is None:
            return None
        kind = scope.get("type")
        if kind not in SCOPE_TYPES:
            raise bad_request("can't parse BotCommandScope JSON object")
        if kind in ("chat", "chat_administrators", "chat_member") and scope.get("chat_id") in (
            None,
            "",
        ):
            raise bad_request("chat_id is empty")
        if kind == "chat_member" and scope.get("user_id") is None:
            raise bad_request("user_id is empty")
        return scope

    def _commands_event(self, scope: JSONDict | None, language: str | None) -> None:
        """Emit a "commands" event with the current commands for a scope."""
        key = self._state.scope_key(scope, language)
        chat_id = (scope or {}).get("chat_id")
        self._state.emit(
            "commands",
            chat_id if isinstance(chat_id, int) else None,
            from_bot=False,
            scope=scope or {"type": "default"},
            language_code=language or "",
            commands=list(self._state.commands.get(key, [])),
        )

    async def set_my_commands(self, params: Params) -> bool:
        """setMyCommands, stored per (scope, language_code)."""
        commands = params.opt_list("commands")
        if commands is None:
            raise bad_request("commands is empty")
        if len(commands) > MAX_COMMANDS:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        cleaned: list[JSONDict] = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not _COMMAND_RE.fullmatch(name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        scope = self._scope(params)
        language = params.opt_str("language_code")
        key = self._state.scope_key(scope, language)
        if cleaned:
            self._state.commands[key] = cleaned
        else:
            self._state.commands.pop(key, None)
        self._commands_event(scope, language)
        return True

    async def get_my_commands(self, params: Params) -> list[JSONDict]:
        """getMyCommands for exactly the given scope (no fallback, like Telegram)."""
        key = self._state.scope_key(self._scope(params), params.opt_str("language_code"))
        return [dict(command) for command in self._state.commands.get(key, [])]

    async def delete_my_commands(self, params: Params) -> bool:
        """deleteMyCommands."""
        scope = self._scope(params)
        language = params.opt_str("language_code")
        self._state.commands.pop(self._state.scope_key(scope, language), None)
        self._commands_event(scope, language)
        return True

    async def set_chat_menu_button(self, params: Params) -> bool:
        """setChatMenuButton (per chat, or the default without chat_id)."""
        button = params.opt_obj("menu_button", "menu button") or {"type": "default"}
        if button.get("type") not in ("default", "commands", "web_app"):
            raise bad_request("can't parse menu button JSON object")
        chat_id = params.opt_int("chat_id")
        self._state.menu_buttons["" if chat_id is None else str(chat_id)] = button
        return True

    async def get_chat_menu_button(self, params: Params) -> JSONDict:
        """getChatMenuButton."""
        chat_id = params.opt_int("chat_id")
        buttons = self._state.menu_buttons
        key = "" if chat_id is None else str(chat_id)
        return dict(buttons.get(key) or buttons.get("") or {"type": "default"})
