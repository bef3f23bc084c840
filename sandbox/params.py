"""Request parameter parsing shared by the sandbox's Bot API and test API."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

JSONDict = dict[str, Any]

_INT_RE = re.compile(r"[+-]?\d+")

#: Parameters that PTB (and Telegram) send as JSON-serialized strings in form bodies.
JSON_KEYS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "commands",
        "scope",
        "allowed_updates",
        "entities",
        "caption_entities",
        "link_preview_options",
        "menu_button",
        "media",
        "message_ids",
    }
)
#: Parameters coerced to int when they arrive as strings.
INT_KEYS = frozenset(
    {
        "chat_id",
        "user_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "reply_to_message_id",
        "message_thread_id",
        "cache_time",
        "file_size",
        "since",
    }
)
#: Parameters coerced to bool when they arrive as strings.
BOOL_KEYS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
        "show_alert",
        "drop_pending_updates",
        "has_spoiler",
        "disable_content_type_detection",
        "show_caption_above_media",
        "disable_web_page_preview",
        "allow_paid_broadcast",
    }
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class ApiError(Exception):
    """An error answered to the client as {"ok": false, ...} with an HTTP status code."""

    def __init__(self, description: str, code: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


def bad_request(message: str) -> ApiError:
    """Build a Telegram-style 400 error ("Bad Request: ...")."""
    return ApiError(f"Bad Request: {message}", 400)


@dataclass(frozen=True)
class Upload:
    """A file uploaded as a multipart part."""

    data: bytes
    filename: str | None
    content_type: str | None

    def describe(self) -> JSONDict:
        """A loggable summary of the upload, without its bytes."""
        return {"upload": self.filename, "content_type": self.content_type, "size": len(self.data)}


async def read_params(request: web.Request) -> JSONDict:
    """Merge query string and body (JSON, urlencoded or multipart) into one dict."""
    values: JSONDict = dict(request.query)
    if not request.body_exists:
        return values
    content_type = request.content_type
    try:
        if content_type == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise bad_request("can't parse JSON request body") from exc
                if not isinstance(body, dict):
                    raise bad_request("JSON request body must be an object")
                values.update(body)
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except web.HTTPException:
                raise
            except Exception as exc:
                raise bad_request(
                    f"can't parse request body ({type(exc).__name__}: {exc})"
                ) from exc
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    values[key] = Upload(value.file.read(), value.filename, value.content_type)
                elif isinstance(value, bytes | bytearray):
                    values[key] = bytes(value).decode("utf-8", errors="replace")
                else:
                    values[key] = value
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError("Request Entity Too Large", 413) from exc
    for key, value in list(values.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            attached = values.get(value[len("attach://") :])
            if isinstance(attached, Upload):
                values[key] = attached
    return values


def _normalize(key: str, value: Any) -> Any:
    """Leniently decode JSON strings and coerce ints/bools for well-known keys."""
    if not isinstance(value, str):
        return value
    if key in JSON_KEYS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in INT_KEYS and _INT_RE.fullmatch(value.strip()):
        return int(value)
    if key in BOOL_KEYS and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


class Params:
    """Typed access to request parameters, raising Telegram-style 400 errors."""

    def __init__(self, values: JSONDict) -> None:
        self.values: JSONDict = {key: _normalize(key, value) for key, value in values.items()}

    def loggable(self) -> JSONDict:
        """The parameters with uploads replaced by a short description."""
        return {
            key: value.describe() if isinstance(value, Upload) else value
            for key, value in self.values.items()
        }

    def has(self, name: str) -> bool:
        """Whether the parameter was given with a non-empty value."""
        value = self.values.get(name)
        return value is not None and value != ""

    def opt_int(self, name: str) -> int | None:
        """An optional integer parameter."""
        if not self.has(name):
            return None
        value = self.values[name]
        if isinstance(value, bool):
            raise bad_request(f"invalid {name}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            return int(value)
        raise bad_request(f"invalid {name}")

    def req_int(self, name: str) -> int:
        """A required integer parameter."""
        value = self.opt_int(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        return value

    def chat_id(self, name: str = "chat_id") -> int:
        """A required chat id; non-numeric ids (e.g. @username) are unknown chats here."""
        if not self.has(name):
            raise bad_request("chat_id is empty")
        try:
            return self.req_int(name)
        except ApiError:
            raise bad_request("chat not found") from None

    def opt_float(self, name: str) -> float | None:
        """An optional number parameter."""
        if not self.has(name):
            return None
        value = self.values[name]
        if isinstance(value, bool):
            raise bad_request(f"invalid {name}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad_request(f"invalid {name}")

    def opt_str(self, name: str) -> str | None:
        """An optional string parameter (numbers are stringified)."""
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad_request(f"invalid {name}")

    def opt_bool(self, name: str, default: bool = False) -> bool:
        """An optional boolean parameter."""
        if not self.has(name):
            return default
        value = self.values[name]
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad_request(f"invalid {name}")

    def _json(self, name: str, what: str) -> Any:
        """Decode a JSON parameter (already decoded values pass through)."""
        value = self.values.get(name)
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {what} JSON object") from None
        return value

    def opt_obj(self, name: str, what: str | None = None) -> JSONDict | None:
        """An optional JSON object parameter."""
        value = self._json(name, what or name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise bad_request(f"can't parse {what or name} JSON object")
        return value

    def opt_list(self, name: str, what: str | None = None) -> list[Any] | None:
        """An optional JSON array parameter."""
        value = self._json(name, what or name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise bad_request(f"can't parse {what or name} JSON object")
        return value

    def opt_file(self, name: str) -> Upload | str | None:
        """An uploaded file part or a file_id / URL string."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, Upload | str):
            return value
        raise bad_request(f"invalid {name}")
