"""The bot's HTTP server: health, readiness and metrics, with a bot running for real."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from tests import images
from tests.botharness import RunningBot, bot_env, start_bot, start_sandbox_mode_bot

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    running = start_bot(tmp_path_factory.mktemp("web-bot"))
    try:
        yield running
    finally:
        running.stop()


def metric(text: str, name: str) -> float:
    """The value of the sample called exactly `name` (labels included)."""
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_healthz_and_readyz(bot: RunningBot) -> None:
    base = bot.web_url()
    with httpx.Client() as client:
        assert client.get(f"{base}/healthz").text == "ok\n"
        ready = client.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] and body["workers_ready"] >= 1
    # The bundled default, registered as v1 at the first start and served from there.
    assert re.fullmatch(r"v1-\d{8}-\d{6}@[0-9a-f]{8}", body["model"]), body["model"]
    assert body["mode"] == "polling"  # a token was given: this is not the sandbox mode
    assert body["versions"]["torch"] == metadata.version("torch")
    assert body["versions"]["verdict"] == metadata.version("verdict")
    assert body["versions"]["python-telegram-bot"].startswith("22.")


def test_metrics_move_when_a_photo_is_classified(bot: RunningBot) -> None:
    base = bot.web_url()
    before = httpx.get(f"{base}/metrics").text
    bot.send_photo(images.coffee_jpeg())
    bot.send_document(images.minimal_pdf(), "x.pdf", "application/pdf")
    after = httpx.get(f"{base}/metrics").text
    answered = 'verdict_photos_total{outcome="answered"}'
    rejected = 'verdict_photos_total{outcome="rejected"}'
    assert metric(after, answered) == metric(before, answered) + 1
    assert metric(after, rejected) == metric(before, rejected) + 1
    assert metric(after, "verdict_photo_seconds_count") == (
        metric(before, "verdict_photo_seconds_count") + 2
    )
    assert metric(after, "verdict_batch_size_count") > metric(before, "verdict_batch_size_count")
    assert metric(after, "verdict_inference_seconds_count") >= 1
    assert metric(after, "verdict_workers_ready") >= 1
    assert metric(after, "verdict_queue_depth") == 0
    assert "verdict_worker_restarts_total" in after
    assert 'verdict_verdicts_total{kind="wrong"}' in after


def test_readyz_says_when_telegram_is_unreachable(tmp_path: Path) -> None:
    """With the Bot API gone, /readyz answers 503 and names the problem; /healthz stays up."""
    other = start_bot(tmp_path)
    try:
        base = other.web_url()
        other.sandbox.stop()
        ready = httpx.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503
        assert "the Telegram Bot API is not reachable" in ready.json()["problems"]
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        other.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_webhook_mode_right_secret_answered_wrong_secret_refused(tmp_path: Path) -> None:
    """The sandbox delivers by webhook with the secret; a forged post gets 403, no reply."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook/telegram"
    secret = "s3cr3t-for-tests_only"
    hooked = start_bot(tmp_path, {"WEBHOOK_URL": url, "WEBHOOK_SECRET": secret, "PORT": str(port)})
    try:
        (call,) = hooked.calls("setWebhook")
        assert call["params"]["url"] == url
        assert httpx.get(f"{hooked.web_url()}/readyz", timeout=30).json()["mode"] == "webhook"
        assert hooked.calls("getUpdates") == []  # no polling in webhook mode
        reply = hooked.send_photo(images.coffee_jpeg())["replies"][0]
        assert reply["text"].startswith("espresso — ")

        forged = {
            "update_id": 999_999,
            "message": {
                "message_id": 1,
                "date": 1_700_000_000,
                "chat": {"id": 4444, "type": "private", "first_name": "Mallory"},
                "from": {"id": 4444, "is_bot": False, "first_name": "Mallory"},
                "text": "/help",
            },
        }
        with httpx.Client() as client:
            wrong = client.post(
                url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"}
            )
            missing = client.post(url, json=forged)
        assert wrong.status_code == 403 and missing.status_code == 403
        hooked.send(text="/help", user_id=4445)  # processed after the forged ones would be
        sent_to = {str(c["params"].get("chat_id")) for c in hooked.calls("sendMessage")}
        assert "4445" in sent_to and "4444" not in sent_to
        assert secret not in hooked.log()
    finally:
        assert hooked.stop() == 0


def test_without_a_token_the_bot_serves_its_sandbox_and_says_so(tmp_path: Path) -> None:
    """No TELEGRAM_TOKEN in a checkout: a loud warning, where to chat, /readyz says "sandbox"."""
    bot = start_sandbox_mode_bot(tmp_path)
    try:
        warning = re.search(r"WARNING bot: SANDBOX MODE: no TELEGRAM_TOKEN set; (.*)", bot.log())
        assert warning, bot.log()
        assert warning.group(1) == (
            f"serving the local stand-in Bot API at {bot.url} — this bot is not on Telegram"
        )
        ready = httpx.get(f"{bot.web_url()}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["mode"] == "sandbox"
        # What the printed instructions suggest, from another shell.
        answer = httpx.post(
            f"{bot.url}/_sandbox/send", params={"wait": 30}, data={"text": "/help"}, timeout=60
        ).json()
        assert answer["replies"], answer
    finally:
        status = bot.stop()
    assert status == 0, bot.log()
    log = bot.log()
    # The token the bot made up for its sandbox ("<digits>:sandbox-<random>") is never shown.
    assert ":sandbox-" not in log and "%3Asandbox-" not in log


def test_without_a_token_or_the_sandbox_the_bot_refuses_to_start(tmp_path: Path) -> None:
    """As in the production image, which has no sandbox/: exit 2 and say why on stderr."""
    no_sandbox = (
        "import sys; sys.modules['sandbox'] = None; "  # `import sandbox` now fails
        "from bot.__main__ import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_sandbox],
        cwd=tmp_path,
        env=bot_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "\nTELEGRAM_TOKEN is not set: set it" in f"\n{result.stderr}", result.stderr
    assert not (tmp_path / "data").exists()  # it stopped before starting anything
