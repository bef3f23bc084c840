"""In-memory state of the sandbox: chats, messages, files, updates, events and the call log."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.media import EncodedPhoto

JSONDict = dict[str, Any]

#: How many events and Bot API calls are kept (older ones are forgotten).
HISTORY_LIMIT = 10_000
#: Message content keys that make a message a "media" message (it has a caption, not a text).
MEDIA_KEYS = ("photo", "document", "video", "animation", "audio", "voice", "sticker")
_DIR_CODES = {
    "photos": "P",
    "documents": "D",
    "stickers": "S",
    "videos": "V",
    "voice": "O",
    "animations": "A",
}


@dataclass
class StoredFile:
    """A file known to the sandbox, downloadable via getFile and /file/bot<token>/<path>."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    mime_type: str
    file_size: int
    file_name: str | None = None


@dataclass
class StoredMessage:
    """A message in a chat, kept in its current state (edits applied)."""

    chat_id: int
    message_id: int
    sender: JSONDict
    from_bot: bool
    date: int
    content: JSONDict
    reply_to: int | None = None
    reply_markup: JSONDict | None = None
    reply_keyboard: JSONDict | None = None
    parse_mode: str | None = None
    edit_date: int | None = None
    edits: int = 0
    deleted: bool = False
    created_seq: int = 0
    changed_seq: int = 0

    @property
    def has_media(self) -> bool:
        """Whether the message carries a photo, document or other media."""
        return any(key in self.content for key in MEDIA_KEYS)


@dataclass
class Chat:
    """A private chat or a group."""

    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1

    def to_json(self) -> JSONDict:
        """The Telegram Chat object."""
        data: JSONDict = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or "User"
        else:
            data["title"] = self.title or "Sandbox group"
        return data

    @property
    def chat_instance(self) -> str:
        """A stable global identifier for callback queries from this chat."""
        return str(4_000_000_000_000_000_000 + self.id)


@dataclass
class CallbackRecord:
    """A callback query created by a button press."""

    id: str
    chat_id: int
    message_id: int
    user: JSONDict
    data: str
    created_seq: int
    answered: bool = False
    answer: JSONDict | None = None


class SandboxState:
    """Everything the sandbox remembers; used from a single event loop only."""

    def __init__(self, bot_user: JSONDict) -> None:
        self.bot_user = bot_user
        self.chats: dict[int, Chat] = {}
        self.users: dict[int, JSONDict] = {}
        self.files: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.photo_sets: dict[str, list[JSONDict]] = {}
        self.updates: list[JSONDict] = []
        self.next_update_id = 1
        self.events: deque[JSONDict] = deque(maxlen=HISTORY_LIMIT)
        self.calls: deque[JSONDict] = deque(maxlen=HISTORY_LIMIT)
        self.seq = 0
        self.callbacks: dict[str, CallbackRecord] = {}
        self.commands: dict[str, list[JSONDict]] = {}
        self.menu_buttons: dict[str, JSONDict] = {}
        self.webhook_url = ""
        #: Injected flood control: method (lower case) → (every Nth call fails, retry_after s).
        self.flood: dict[str, tuple[int, int]] = {}
        self.flood_counts: dict[str, int] = {}
        #: Injected failures: method (lower case) → (calls left to fail, error_code, description).
        self.faults: dict[str, tuple[int, int, str]] = {}
        self.poll_generation = 0
        self.closing = False
        #: How many times reset() ran: live streams use it to tell their clients to reload.
        self.resets = 0
        #: Tells this sandbox's event ids from those of an earlier run (a restarted bot).
        self.instance = secrets.token_hex(4)
        self.last_bot_activity: dict[int, float] = {}
        self._file_counter = 0
        self._callback_counter = 0
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------- waiting

    def notify(self) -> None:
        """Wake every coroutine waiting in wait_until."""
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Wait (without polling) until predicate() is true or seconds pass; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if predicate() or self.closing:
                return predicate()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return predicate()

    async def wait_quiet(self, chat_id: int, settle: float, deadline: float) -> None:
        """Wait until the bot has been idle in chat_id for settle seconds (or deadline)."""
        loop = asyncio.get_running_loop()
        while not self.closing:
            now = loop.time()
            last = self.last_bot_activity.get(chat_id, 0.0)
            quiet_at = last + settle
            if now >= quiet_at or now >= deadline:
                return
            await asyncio.sleep(min(quiet_at, deadline) - now)

    def close(self) -> None:
        """Make every long poll return now (used when the server stops)."""
        self.closing = True
        self.notify()

    # ------------------------------------------------------------------ users

    def user(self, user_id: int, first_name: str | None = None) -> JSONDict:
        """Get or create a (human) user; a given first_name replaces the stored one."""
        known = self.users.get(user_id)
        if known is None or (first_name and first_name != known["first_name"]):
            known = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name or (known or {}).get("first_name") or "Tester",
                "language_code": "en",
            }
            self.users[user_id] = known
        return known

    # ------------------------------------------------------------------- chats

    def chat(self, chat_id: int) -> Chat | None:
        """The chat with that id, if any."""
        return self.chats.get(chat_id)

    def ensure_chat(
        self, chat_id: int, chat_type: str, first_name: str | None, title: str | None
    ) -> Chat:
        """Get or create a chat; raise ValueError if it exists with another type."""
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = Chat(id=chat_id, type=chat_type, title=title, first_name=first_name)
            self.chats[chat_id] = chat
        elif chat.type != chat_type:
            raise ValueError(f"chat {chat_id} already exists with type {chat.type!r}")
        elif chat_type == "private":
            if first_name:
                chat.first_name = first_name
        elif title:
            chat.title = title
        return chat

    def find_message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        """A live (not deleted) message, if any."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return None
        message = chat.messages.get(message_id)
        if message is None or message.deleted:
            return None
        return message

    # ---------------------------------------------------------------- messages

    def message_json(self, message: StoredMessage, *, nested: bool = True) -> JSONDict:
        """The Telegram Message object as the bot sees it (current state)."""
        chat = self.chats.get(message.chat_id)
        chat_json = chat.to_json() if chat else {"id": message.chat_id, "type": "private"}
        data: JSONDict = {
            "message_id": message.message_id,
            "from": dict(message.sender),
            "chat": chat_json,
            "date": message.date,
        }
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if nested and message.reply_to is not None:
            target = self.find_message(message.chat_id, message.reply_to)
            if target is not None:
                data["reply_to_message"] = self.message_json(target, nested=False)
        data.update(copy.deepcopy(message.content))
        if message.reply_markup is not None:
            data["reply_markup"] = copy.deepcopy(message.reply_markup)
        return data

    def message_view(self, message: StoredMessage) -> JSONDict:
        """The Message plus sandbox-only fields, for the test API."""
        data = self.message_json(message)
        data["from_bot"] = message.from_bot
        data["edits"] = message.edits
        if message.parse_mode:
            data["parse_mode"] = message.parse_mode
        if message.reply_keyboard is not None:
            data["reply_keyboard"] = copy.deepcopy(message.reply_keyboard)
        return data

    def add_message(
        self,
        chat: Chat,
        *,
        sender: JSONDict,
        from_bot: bool,
        content: JSONDict,
        reply_to: int | None = None,
        reply_markup: JSONDict | None = None,
        reply_keyboard: JSONDict | None = None,
        parse_mode: str | None = None,
    ) -> StoredMessage:
        """Append a message to a chat and emit a "message" event."""
        message = StoredMessage(
            chat_id=chat.id,
            message_id=chat.next_message_id,
            sender=sender,
            from_bot=from_bot,
            date=int(time.time()),
            content=content,
            reply_to=reply_to,
            reply_markup=reply_markup,
            reply_keyboard=reply_keyboard,
            parse_mode=parse_mode,
        )
        chat.next_message_id += 1
        chat.messages[message.message_id] = message
        seq = self.emit("message", chat.id, from_bot=from_bot, message=self.message_view(message))
        message.created_seq = message.changed_seq = seq
        return message

    def edit_message(
        self,
        message: StoredMessage,
        *,
        content: JSONDict,
        reply_markup: JSONDict | None,
        parse_mode: str | None,
    ) -> None:
        """Apply an edit by the bot and emit an "edit" event."""
        message.content = content
        message.reply_markup = reply_markup
        message.parse_mode = parse_mode
        message.edit_date = int(time.time())
        message.edits += 1
        message.changed_seq = self.emit(
            "edit", message.chat_id, from_bot=True, message=self.message_view(message)
        )

    def delete_message(self, message: StoredMessage, *, by_bot: bool) -> None:
        """Mark a message deleted and emit a "delete" event."""
        message.deleted = True
        message.changed_seq = self.emit(
            "delete", message.chat_id, from_bot=by_bot, message_id=message.message_id
        )

    def replies_to(self, message: StoredMessage) -> list[StoredMessage]:
        """Bot messages quoting message; else non-quoting bot messages sent after it."""
        chat = self.chats.get(message.chat_id)
        if chat is None:
            return []
        live = [m for m in chat.messages.values() if m.from_bot and not m.deleted]
        quoting = [m for m in live if m.reply_to == message.message_id]
        if quoting:
            return quoting
        return [m for m in live if m.reply_to is None and m.created_seq > message.created_seq]

    def bot_messages_changed_since(self, chat_id: int, seq: int) -> list[StoredMessage]:
        """Live bot messages in a chat sent or edited after event seq."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [
            m
            for m in chat.messages.values()
            if m.from_bot and not m.deleted and m.changed_seq > seq
        ]

    # ----------------------------------------------------------------- events

    def emit(self, kind: str, chat_id: int | None, *, from_bot: bool, **payload: Any) -> int:
        """Record an event with the next sequence number and wake waiters."""
        self.seq += 1
        event: JSONDict = {"seq": self.seq, "type": kind, "chat_id": chat_id, **payload}
        self.events.append(event)
        if from_bot and chat_id is not None:
            self.last_bot_activity[chat_id] = asyncio.get_running_loop().time()
        self.notify()
        return self.seq

    def events_since(self, since: int, chat_id: int | None = None) -> list[JSONDict]:
        """Events with seq > since (optionally only for one chat)."""
        return [
            event
            for event in self.events
            if event["seq"] > since and (chat_id is None or event["chat_id"] == chat_id)
        ]

    def record_call(self, method: str, params: JSONDict) -> None:
        """Append a Bot API call to the call log."""
        self.calls.append({"method": method, "params": params, "time": time.time()})

    # ---------------------------------------------------------------- updates

    def add_update(self, kind: str, payload: JSONDict) -> int:
        """Queue an Update for getUpdates and return its update_id."""
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append({"update_id": update_id, kind: copy.deepcopy(payload)})
        self.notify()
        return update_id

    def confirm_updates(self, offset: int) -> None:
        """Forget updates with update_id < offset (Telegram's confirmation semantics)."""
        self.updates = [update for update in self.updates if update["update_id"] >= offset]

    def select_updates(self, offset: int, limit: int) -> list[JSONDict]:
        """Pending updates for a getUpdates call."""
        if offset < 0:
            return self.updates[offset:][:limit]
        return [update for update in self.updates if update["update_id"] >= offset][:limit]

    def begin_poll(self) -> int:
        """Register a new getUpdates poller, superseding any older one."""
        self.poll_generation += 1
        self.notify()
        return self.poll_generation

    # ------------------------------------------------------------------ files

    def store_file(
        self,
        directory: str,
        data: bytes,
        *,
        mime_type: str,
        extension: str,
        file_size: int | None = None,
        file_name: str | None = None,
    ) -> StoredFile:
        """Store bytes and give them a new file_id, file_unique_id and file_path."""
        self._file_counter += 1
        number = self._file_counter
        code = _DIR_CODES.get(directory, "F")
        stored = StoredFile(
            file_id=f"SBX{code}{number:05d}{secrets.token_hex(10)}",
            file_unique_id=f"SBXU{code}{number:05d}",
            file_path=f"{directory}/file_{number}{extension}",
            data=data,
            mime_type=mime_type,
            file_size=len(data) if file_size is None else file_size,
            file_name=file_name,
        )
        self.files[stored.file_id] = stored
        self.files_by_path[stored.file_path] = stored
        return stored

    def store_photo(self, renditions: list[EncodedPhoto]) -> list[JSONDict]:
        """Store JPEG renditions and return the PhotoSize list (small to large)."""
        sizes: list[JSONDict] = []
        for rendition in renditions:
            stored = self.store_file(
                "photos", rendition.data, mime_type="image/jpeg", extension=".jpg"
            )
            sizes.append(
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "width": rendition.width,
                    "height": rendition.height,
                    "file_size": stored.file_size,
                }
            )
        for size in sizes:
            self.photo_sets[size["file_id"]] = sizes
        return sizes

    # -------------------------------------------------------------- callbacks

    def new_callback(self, chat_id: int, message_id: int, user: JSONDict, data: str) -> str:
        """Register a callback query and return its id."""
        self._callback_counter += 1
        query_id = str(6_000_000_000_000_000_000 + self._callback_counter * 7_919)
        self.callbacks[query_id] = CallbackRecord(
            id=query_id,
            chat_id=chat_id,
            message_id=message_id,
            user=user,
            data=data,
            created_seq=self.seq,
        )
        return query_id

    # --------------------------------------------------------------- commands

    @staticmethod
    def scope_key(scope: JSONDict | None, language_code: str | None) -> str:
        """A canonical key for a (BotCommandScope, language_code) pair."""
        scope = scope or {"type": "default"}
        relevant: JSONDict = {}
        for key in ("type", "chat_id", "user_id"):
            value = scope.get(key)
            if isinstance(value, str) and value.lstrip("-").isdigit():
                value = int(value)
            if value is not None:
                relevant[key] = value
        return json.dumps({"scope": relevant, "lang": language_code or ""}, sort_keys=True)

    # ------------------------------------------------------------------ reset

    def reset(self) -> None:
        """Forget chats, users, files, updates, events, calls and callback queries."""
        self.chats.clear()
        self.users.clear()
        self.files.clear()
        self.files_by_path.clear()
        self.photo_sets.clear()
        self.updates.clear()
        self.events.clear()
        self.calls.clear()
        self.callbacks.clear()
        self.last_bot_activity.clear()
        self.resets += 1
        self.notify()
