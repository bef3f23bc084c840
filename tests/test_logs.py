"""The one token redaction, used by the bot's log handler and by the sandbox's loggers."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator

import pytest

from bot.logs import RedactFilter

TOKEN = "123456789:AAHfake/TOKEN+for tests_only"  # odd characters: every encoding differs
ENCODINGS = [TOKEN, TOKEN.replace(":", "%3A"), urllib.parse.quote(TOKEN, safe="")]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, RedactFilter]]:
    """A logger writing through a formatter to a string, the filter on its handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    redact = RedactFilter([TOKEN])
    handler.addFilter(redact)
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream, redact
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.mark.parametrize("form", ENCODINGS)
def test_plain_and_percent_encoded_tokens_are_replaced(form: str) -> None:
    assert RedactFilter([TOKEN]).redact(f"GET /bot{form}/getMe") == "GET /bot<token>/getMe"


def test_messages_arguments_tracebacks_and_stacks_are_redacted(
    logged: tuple[logging.Logger, io.StringIO, RedactFilter],
) -> None:
    logger, stream, _ = logged
    logger.info("calling %s", f"https://x/bot{ENCODINGS[1]}/getMe")
    try:
        raise RuntimeError(f"failed for {TOKEN}")
    except RuntimeError:
        logger.exception("boom")
    logger.warning("where: %s", TOKEN, stack_info=True)
    logger.info("a call %s %s", "that does not fit")  # malformed: not an error report
    text = stream.getvalue()
    assert "https://x/bot<token>/getMe" in text
    assert "RuntimeError: failed for <token>" in text
    assert "where: <token>" in text and "Stack (most recent call last)" in text
    assert "a call %s %s ('that does not fit',)" in text
    for form in ENCODINGS:
        assert form not in text


def test_secrets_added_later_are_redacted_and_plain_records_are_left_alone(
    logged: tuple[logging.Logger, io.StringIO, RedactFilter],
) -> None:
    logger, stream, redact = logged
    redact.secrets.extend(["", "later-secret"])  # an empty one must not match everywhere
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", (3,), None)
    assert redact.filter(record) and (record.msg, record.args) == ("n=%d", (3,))
    logger.info("got later-secret")
    assert stream.getvalue() == "INFO got <token>\n"


def test_on_a_logger_every_handler_gets_the_redacted_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """How the sandbox uses it on aiohttp's loggers: records are cleaned before propagating."""
    logger = logging.getLogger("tests.logs.aiohttp-like")
    redact = RedactFilter([TOKEN])
    logger.addFilter(redact)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            try:
                raise ValueError(ENCODINGS[2])
            except ValueError:
                logger.exception("bad request line %r", f"/bot{TOKEN}/x")
    finally:
        logger.removeFilter(redact)
    assert "<token>" in caplog.text
    for form in ENCODINGS:
        assert form not in caplog.text


def test_the_module_imports_only_the_standard_library() -> None:
    """The sandbox imports it; it must stay a leaf (nothing of the bot, telegram or torch)."""
    code = (
        "import sys; before = set(sys.modules); import bot.logs; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} "
        "- set(sys.stdlib_module_names)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['bot']"
