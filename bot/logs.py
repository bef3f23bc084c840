"""Logging set-up: one place, with the bot token scrubbed from every line."""

from __future__ import annotations

import logging
import sys


class RedactFilter(logging.Filter):
    """Replaces each secret in a log record's final text with a placeholder."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with the secrets removed; never drops a record."""
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message
        for secret in self.secrets:
            text = text.replace(secret, "<token>")
            # Percent-encoded, as it appears in file URLs.
            text = text.replace(secret.replace(":", "%3A"), "<token>")
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "<token>")
        if text != message:
            record.msg, record.args = text, None
        return True


def configure_logging(level: str, secrets: list[str]) -> RedactFilter:
    """Log to stderr at `level`, with secrets redacted; quiet the HTTP client's URL lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redact = RedactFilter(secrets)
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # aiohttp's access log prints request paths, which contain the token in sandbox mode.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return redact
