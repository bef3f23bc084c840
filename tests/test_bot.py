"""End to end: real python-telegram-bot in `python -m bot`, over HTTP, against the sandbox."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import images
from tests.botharness import FAKE_TOKEN, RunningBot, start_bot

pytestmark = pytest.mark.timeout(900)

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    running = start_bot(tmp_path_factory.mktemp("bot"))
    try:
        yield running
    finally:
        running.stop()


def only_reply(answer: dict) -> dict:
    replies = answer["replies"]
    assert len(replies) == 1, answer
    reply = replies[0]
    assert reply["reply_to_message"]["message_id"] == answer["message"]["message_id"]
    return reply


def test_coffee_photo_is_espresso(bot: RunningBot) -> None:
    """A photo of coffee is answered, quoting it, with 'espresso — NN%'."""
    reply = only_reply(bot.send_photo(images.coffee_jpeg()))
    assert re.fullmatch(r"espresso — \d+%", reply["text"]), reply["text"]


def test_chelsea_photo_is_a_cat(bot: RunningBot) -> None:
    text = only_reply(bot.send_photo(images.chelsea_jpeg()))["text"]
    assert any(cat in text for cat in CATS), text


def test_unsure_answers_list_the_runner_ups(bot: RunningBot) -> None:
    """Random noise is nothing in particular: the reply lists the three best guesses."""
    data = images.encode(images.noise(320, 240, seed=3), "JPEG", quality=95)
    text = only_reply(bot.send_photo(data))["text"]
    assert text.startswith("Not sure: "), text
    assert len(re.findall(r"\d+%", text)) == 3, text


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("WEBP", "image/webp"), ("TIFF", "image/tiff")],
)
def test_image_documents_are_classified(bot: RunningBot, fmt: str, mime: str) -> None:
    """An image sent as a file, uncompressed, is classified like a photo."""
    data = images.encode(images.coffee(), fmt)
    reply = only_reply(bot.send_document(data, f"coffee.{fmt.lower()}", mime))
    assert reply["text"].startswith("espresso — "), reply["text"]


def test_a_file_with_a_misleading_type_is_read_by_content(bot: RunningBot) -> None:
    """iOS sends images as application/octet-stream with odd names: content decides."""
    reply = only_reply(
        bot.send_document(images.coffee_jpeg(), "IMG_0001", "application/octet-stream")
    )
    assert reply["text"].startswith("espresso — ")


def test_an_iphone_heic_file_sent_as_octet_stream_is_classified(bot: RunningBot) -> None:
    """HEIC, no extension, generic MIME type: what an iPhone's Files app sends."""
    data = images.encode(images.coffee(), "HEIF")
    reply = only_reply(bot.send_document(data, "IMG_1234", "application/octet-stream"))
    assert reply["text"].startswith("espresso — "), reply["text"]


def test_exif_rotated_photo_file(bot: RunningBot) -> None:
    """A sideways-stored JPEG with an EXIF orientation tag is turned upright first."""
    upright = images.coffee()
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)
    data = images.with_exif_orientation(stored_sideways, 6)
    assert Image.open(io.BytesIO(data)).size == (400, 600)
    reply = only_reply(bot.send_document(data, "coffee.jpg", "image/jpeg"))
    assert reply["text"].startswith("espresso — "), reply["text"]


@pytest.mark.parametrize(
    ("name", "data", "mime", "expected"),
    [
        ("report.pdf", images.minimal_pdf(), "application/pdf", "looks like a PDF document"),
        ("cut.jpg", images.truncated_jpeg(), "image/jpeg", "damaged or incomplete"),
        ("empty.jpg", b"", "image/jpeg", "empty"),
        ("bomb.png", images.huge_png(), "image/png", "40000×40000"),
    ],
)
def test_bad_files_get_a_clear_reply_and_the_next_photo_is_answered(
    bot: RunningBot, name: str, data: bytes, mime: str, expected: str
) -> None:
    """Each bad file is refused, naming the problem; a normal photo right after is answered."""
    reply = only_reply(bot.send_document(data, name, mime, user_id=777))
    assert expected in reply["text"], reply["text"]
    after = only_reply(bot.send_photo(images.coffee_jpeg(), user_id=777))
    assert after["text"].startswith("espresso — ")


def test_a_file_over_the_download_limit_is_refused_before_downloading(bot: RunningBot) -> None:
    """21 MB: more than Telegram lets bots download; the bot says so and fetches nothing."""
    before = len(bot.calls("getFile"))
    data = images.coffee_jpeg() + b"\x00" * (21 * 1024 * 1024)
    reply = only_reply(bot.send_document(data, "big.jpg", "image/jpeg"))
    assert "20 MB" in reply["text"] and "21.1 MB" in reply["text"], reply["text"]
    assert len(bot.calls("getFile")) == before


@pytest.mark.parametrize("kind", ["sticker", "video", "voice"])
def test_other_media_get_a_hint(bot: RunningBot, kind: str) -> None:
    reply = only_reply(bot.send(kind=kind))
    assert "photo" in reply["text"]


def test_text_gets_a_hint(bot: RunningBot) -> None:
    reply = only_reply(bot.send(text="what are you?"))
    assert "Send me a photo" in reply["text"]


@pytest.mark.parametrize("command", ["/start", "/help"])
def test_start_and_help_explain_what_is_kept(bot: RunningBot, command: str) -> None:
    replies = bot.send(text=command)["replies"]
    assert replies, "no reply"
    text = replies[0]["text"]
    assert "photo" in text and "What I keep" in text and "ImageNet" in text


def test_unknown_command(bot: RunningBot) -> None:
    reply = only_reply(bot.send(text="/frobnicate"))
    assert "/help" in reply["text"]


def test_many_users_at_once_each_get_their_own_answer(bot: RunningBot) -> None:
    """Coffee and cat photos from eight users at once: every user gets their own label."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(9000 + n, n % 2 == 0) for n in range(8)]

    def one(job: tuple[int, bool]) -> tuple[bool, str]:
        user, is_coffee = job
        data = images.coffee_jpeg() if is_coffee else images.chelsea_jpeg()
        return is_coffee, only_reply(bot.send_photo(data, user_id=user))["text"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    for is_coffee, text in results:
        if is_coffee:
            assert text.startswith("espresso"), text
        else:
            assert any(cat in text for cat in CATS), text


def test_stops_cleanly_never_imported_torch_and_never_logged_the_token(
    bot: RunningBot, tmp_path: Path
) -> None:
    """After all of the above: SIGTERM exits 0; torch/fastai never loaded; no token in logs."""
    assert bot.stop() == 0
    modules = bot.modules()
    assert "telegram" in modules  # the list is real
    assert not [m for m in modules if m == "torch" or m.startswith(("torch.", "fastai"))]
    log = bot.log()
    assert "getUpdates" in log or "get_updates" in log  # DEBUG logging was on
    secret = FAKE_TOKEN.split(":", 1)[1]
    assert secret not in log
    assert secret not in log.replace("%3A", ":")
