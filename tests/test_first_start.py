"""A first start on an empty data folder, as an operator meets it: the workers export the bundled
default and answer on fastai at once; the bot registers it as v1, compiles it in a child process
and then serves the verified ONNX form, with the same answer."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from model.registry import Registry
from tests import images
from tests.botharness import start_bot

USER = 5151


def test_the_first_start_answers_at_once_then_serves_the_compiled_default(tmp_path: Path) -> None:
    bot = start_bot(tmp_path, seed=False)
    try:
        first = bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"]
        assert first and first[0]["text"].startswith("espresso"), first
        url = f"{bot.web_url()}/readyz"
        deadline = time.monotonic() + 600  # the compile: about 30 s on 2 idle cores
        backend = ""
        while time.monotonic() < deadline and backend != "onnx":
            backend = httpx.get(url, timeout=10).json().get("backend", "")
            if backend != "onnx":
                time.sleep(0.5)
        assert backend == "onnx", bot.log()[-3000:]
        again = bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"]
        assert again and again[0]["text"] == first[0]["text"], (first, again)
    finally:
        assert bot.stop() == 0
    card = Registry(tmp_path / "data" / "models").active()
    assert card is not None and card.is_default and card.number == 1
    record = card.compile_record
    assert record is not None and record.ok, card.compiled
    assert f"now serving {card.version} compiled (onnx" in bot.log()
