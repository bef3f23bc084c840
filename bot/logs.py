"""Logging set-up: one place, with the bot token scrubbed from every line.

`RedactFilter` is also what keeps the token out of the sandbox's logs (``sandbox/server.py``),
so this module stays a leaf: the standard library only, nothing else of the bot.
"""

from __future__ import annotations

import logging
import sys
import urllib.parse
from collections.abc import Iterable

PLACEHOLDER = "<token>"


def _forms(secret: str) -> list[str]:
    """The secret as it can appear in a log line: plain, and percent-encoded as in URLs."""
    forms = {
        secret,
        secret.replace(":", "%3A"),  # a path segment, as in the Bot API's file URLs
        urllib.parse.quote(secret, safe=""),  # fully encoded, as in a query string
    }
    return sorted(forms, key=len, reverse=True)  # the longest first: none hides another


class RedactFilter(logging.Filter):
    """Replaces each secret in a log record's final text with a placeholder.

    On a handler it cleans every record that handler writes; on a logger, the records logged
    there, before any handler sees them. The message, a traceback and a stack are rewritten in
    place; the record is never dropped. `secrets` may grow after the filter is installed.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if secret]

    def redact(self, text: str) -> str:
        """`text` with every secret, plain or percent-encoded, replaced by the placeholder."""
        for secret in self.secrets:
            if not secret:
                continue
            for form in _forms(secret):
                text = text.replace(form, PLACEHOLDER)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record with the secrets removed; never drops a record."""
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
            formatted = True
        except Exception:
            # A format string that does not fit its arguments: keep both, as plain text,
            # rather than let logging print them (unredacted) in its error report.
            message = f"{record.msg} {record.args!r}"
            formatted = False
        text = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        if text != message or not formatted:
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
