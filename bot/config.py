"""Settings: read once at start from the environment and `.env`, validated, then frozen."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from model.compiled import BACKENDS
from model.datadir import DEFAULT_DATA_DIR, data_dir, models_dir, read_environment

T = TypeVar("T")

RAY_DASHBOARD_PORT = 8265
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # a URL's or bind's host
TOKEN_PATTERN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$")


class ConfigError(Exception):
    """One or more settings are missing or malformed; the message names each variable."""


class Secret:
    """A string that never shows itself in `repr`, `str` or logs; `.get()` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Every setting of the bot. Build with `load_settings()`, or directly in tests."""

    telegram_token: Secret | None = None
    telegram_api_url: str = "https://api.telegram.org"
    admin_ids: frozenset[int] = field(default_factory=frozenset)
    allowed_user_ids: frozenset[int] | None = None
    training_data_dir: Path | None = None
    retrain_args: tuple[str, ...] = ()
    data_dir: Path = DEFAULT_DATA_DIR
    model_path: Path | None = None
    confidence_threshold: float = 0.5
    keep_uncertain_images: bool = True
    inbox: bool = True
    retention_days: float = 90.0
    top_k: int = 3
    max_image_pixels: int = 50_000_000
    max_download_mb: float = 20.0
    classify_timeout: float = 30.0
    max_messages_per_second: float = 30.0
    album_wait_s: float = 1.0
    inference_device: str = "auto"
    inference_backend: str = "auto"
    workers: int | None = None
    inference_threads: int = 1
    max_batch: int | None = None
    max_wait_ms: float | None = None
    queue_size: int | None = None
    # Classifying on a Ray Serve cluster (bot/remote.py) instead of local workers.
    inference_url: str | None = None
    ray_dashboard_url: str | None = None  # None: INFERENCE_URL's host, port 8265
    model_base_url: str | None = None  # None: http://<this host's name>:PORT
    model_token: Secret | None = None
    webhook_url: str | None = None
    webhook_secret: Secret | None = None
    http_host: str = "127.0.0.1"
    port: int = 8080
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8088
    log_level: str = "INFO"
    #: True when `python -m bot` serves its own sandbox because TELEGRAM_TOKEN is unset; set at
    #: start-up, never read from the environment.
    sandbox: bool = False

    @property
    def mode(self) -> Literal["sandbox", "webhook", "polling"]:
        """How the bot meets its users: "sandbox" (the local stand-in, not Telegram),
        "webhook" (Telegram posts updates) or "polling" (the bot asks Telegram)."""
        if self.sandbox:
            return "sandbox"
        return "webhook" if self.webhook_url is not None else "polling"

    @property
    def models_dir(self) -> Path:
        """Where model files live (the exported default among them)."""
        return models_dir(self.data_dir)

    @property
    def webhook_path(self) -> str:
        """The path Telegram posts to, taken from WEBHOOK_URL (a proxy forwards it as is)."""
        path = urlsplit(self.webhook_url or "").path
        return path if path and path != "/" else "/telegram"

    @property
    def dashboard_url(self) -> str | None:
        """The Ray dashboard (its Serve REST API): RAY_DASHBOARD_URL, else INFERENCE_URL's
        host on port 8265."""
        if self.ray_dashboard_url or not self.inference_url:
            return self.ray_dashboard_url
        parts = urlsplit(self.inference_url)
        return f"{parts.scheme}://{parts.hostname}:{RAY_DASHBOARD_PORT}"

    @property
    def models_url(self) -> str:
        """Where the replicas fetch model files from this bot's web server."""
        return self.model_base_url or f"http://{socket.gethostname()}:{self.port}"

    @property
    def max_download_bytes(self) -> int:
        """The download limit in bytes."""
        return int(self.max_download_mb * 1024 * 1024)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Settings from `environ` (default: the process environment) over `env_file`.

    Raises `ConfigError` listing every bad variable at once.
    """
    values = read_environment(environ, env_file)
    reader = _Reader(values)
    defaults = Settings()

    token = reader.get("TELEGRAM_TOKEN", _token, None)
    api_url = reader.get("TELEGRAM_API_URL", _http_url, defaults.telegram_api_url)
    settings = Settings(
        telegram_token=token,
        telegram_api_url=api_url,
        admin_ids=reader.get("ADMIN_IDS", _id_set, frozenset()),
        allowed_user_ids=reader.get("ALLOWED_USER_IDS", _id_set, None),
        training_data_dir=reader.get("TRAINING_DATA_DIR", _existing_dir, None),
        retrain_args=reader.get("RETRAIN_ARGS", _arguments, ()),
        data_dir=data_dir(values),
        model_path=reader.get("MODEL_PATH", _existing_file, None),
        confidence_threshold=reader.get(
            "CONFIDENCE_THRESHOLD", parse_fraction, defaults.confidence_threshold
        ),
        keep_uncertain_images=reader.get(
            "KEEP_UNCERTAIN_IMAGES", _bool, defaults.keep_uncertain_images
        ),
        inbox=reader.get("INBOX", _bool, defaults.inbox),
        retention_days=reader.get(
            "RETENTION_DAYS", _float_between(1, 36500), defaults.retention_days
        ),
        top_k=reader.get("TOP_K", _int_between(1, 10), defaults.top_k),
        max_image_pixels=reader.get(
            "MAX_IMAGE_PIXELS", _int_between(10_000, 1_000_000_000), defaults.max_image_pixels
        ),
        max_download_mb=reader.get(
            "MAX_DOWNLOAD_MB", _float_between(0.1, 2000), defaults.max_download_mb
        ),
        classify_timeout=reader.get(
            "CLASSIFY_TIMEOUT", _float_between(1, 600), defaults.classify_timeout
        ),
        max_messages_per_second=reader.get(
            "MAX_MESSAGES_PER_SECOND", _float_between(1, 10_000), defaults.max_messages_per_second
        ),
        album_wait_s=reader.get("ALBUM_WAIT_MS", _float_between(0, 10_000), 1000.0) / 1000,
        inference_device=reader.get("INFERENCE_DEVICE", _device, defaults.inference_device),
        inference_backend=reader.get("INFERENCE_BACKEND", _backend, defaults.inference_backend),
        workers=reader.get("WORKERS", _int_between(1, 64), None),
        inference_threads=reader.get(
            "INFERENCE_THREADS", _int_between(1, 256), defaults.inference_threads
        ),
        max_batch=reader.get("MAX_BATCH", _int_between(1, 512), None),
        max_wait_ms=reader.get("MAX_WAIT_MS", _float_between(0, 1000), None),
        queue_size=reader.get("QUEUE_SIZE", _int_between(1, 100_000), None),
        inference_url=reader.get("INFERENCE_URL", _service_url, None),
        ray_dashboard_url=reader.get("RAY_DASHBOARD_URL", _http_url, None),
        model_base_url=reader.get("MODEL_BASE_URL", _http_url, None),
        model_token=reader.get("MODEL_TOKEN", _webhook_secret, None),
        webhook_url=reader.get("WEBHOOK_URL", _webhook_url, None),
        webhook_secret=reader.get("WEBHOOK_SECRET", _webhook_secret, None),
        http_host=reader.get("HTTP_HOST", _nonempty, defaults.http_host),
        port=reader.get("PORT", _int_between(0, 65535), defaults.port),
        sandbox_host=reader.get("SANDBOX_HOST", _nonempty, defaults.sandbox_host),
        sandbox_port=reader.get("SANDBOX_PORT", _int_between(0, 65535), defaults.sandbox_port),
        log_level=reader.get("LOG_LEVEL", _log_level, defaults.log_level),
    )
    if settings.webhook_url and settings.webhook_secret is None:
        reader.errors.append(
            "WEBHOOK_SECRET: required with WEBHOOK_URL, so that only Telegram can post updates "
            "(1-256 characters: letters, digits, '_' and '-')"
        )
    if settings.webhook_url and settings.telegram_token is None:
        reader.errors.append("WEBHOOK_URL: webhook mode needs TELEGRAM_TOKEN")
    if reader.errors:
        raise ConfigError("\n".join(reader.errors))
    return settings


class _Reader:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.errors: list[str] = []

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.errors.append(f"{name}: {exc}")
            return default


def _token(raw: str) -> Secret:
    if not TOKEN_PATTERN.match(raw):
        # Never echo the value: a near-miss token is still a secret.
        raise ValueError(
            "does not look like a bot token from @BotFather (digits, a colon, then letters, "
            "digits, '-' or '_'); the value is not shown"
        )
    return Secret(raw)


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL such as https://api.telegram.org, got {raw!r}")
    if parts.path.rstrip("/") or parts.query:
        raise ValueError(f"expected the server's root URL without a path, got {raw!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _service_url(raw: str) -> str:
    """An http(s) URL that may have a path (a Serve application's route prefix)."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"expected an http(s) URL such as http://ray-head:8000/verdict, got {raw!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without a query, got {raw!r}")
    return raw.rstrip("/")


def _id_set(raw: str) -> frozenset[int]:
    ids = set()
    for item in re.split(r"[,\s]+", raw):
        if not item:
            continue
        if not re.fullmatch(r"-?\d+", item):
            raise ValueError(
                f"expected numeric Telegram user ids separated by commas, got {item!r} "
                "(usernames are not accepted: they can change hands)"
            )
        ids.add(int(item))
    return frozenset(ids)


def _existing_file(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {raw!r}")
    return path


def _arguments(raw: str) -> tuple[str, ...]:
    import shlex

    try:
        return tuple(shlex.split(raw))
    except ValueError as exc:
        raise ValueError(f"cannot split {raw!r} into arguments: {exc}") from None


def _existing_dir(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"no such folder: {raw!r}")
    return path


def parse_fraction(raw: str) -> float:
    """A share from "0.4", "40%" or "40" (above 1 reads as a percentage); ValueError if not
    one between 0 and 1. Used for CONFIDENCE_THRESHOLD and by /threshold."""
    problem = f"expected a number between 0 and 1 (or a percentage), got {raw!r}"
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise ValueError(problem) from None
    if raw.endswith("%") or value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(problem)
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}, got {value:g}")
        return value

    return parse


def _nonempty(raw: str) -> str:
    return raw


def _webhook_url(raw: str) -> str:
    parts = urlsplit(raw)
    local = parts.hostname in LOOPBACK_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise ValueError(
            "Telegram only posts to https URLs (http only for localhost, i.e. a local Bot API "
            f"server or the sandbox), got {raw!r}"
        )
    return raw


def _webhook_secret(raw: str) -> Secret:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", raw):
        raise ValueError(
            "1-256 characters of letters, digits, '_' and '-' (Telegram's rule); "
            "the value is not shown"
        )
    return Secret(raw)


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _device(raw: str) -> str:
    device = raw.lower()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"expected auto, cpu or cuda, got {raw!r}")
    return device


def _backend(raw: str) -> str:
    backend = raw.lower()
    if backend not in BACKENDS:
        raise ValueError(f"expected one of {', '.join(BACKENDS)}, got {raw!r}")
    return backend


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level
