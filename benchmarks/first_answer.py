"""Time from `python -m bot` (sandbox mode, no token) to the first answered photo.

Run: .venv/bin/python benchmarks/first_answer.py
Measures a cold start (empty DATA_DIR: the default learner is exported first) and a warm one
(the exported learner is loaded from DATA_DIR/models).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import skimage.data
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def coffee_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def first_answer(data_dir: Path) -> tuple[float, str]:
    """Seconds from process start to the first reply to a photo, and that reply."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_TOKEN"}
    env.update({"DATA_DIR": str(data_dir), "SANDBOX_PORT": str(port), "LOG_LEVEL": "WARNING"})
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        env=env,
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    photo = coffee_jpeg()
    try:
        with httpx.Client(timeout=300) as client:
            while True:
                try:
                    response = client.post(
                        f"{url}/_sandbox/send",
                        params={"wait": 300},
                        files={"photo": ("coffee.jpg", photo, "image/jpeg")},
                    )
                    break
                except httpx.ConnectError:
                    if process.poll() is not None:
                        raise RuntimeError("the bot exited") from None
                    time.sleep(0.05)
            replies = response.json()["replies"]
            elapsed = time.monotonic() - started
            return elapsed, replies[0]["text"] if replies else "(no reply)"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        cold, text = first_answer(data_dir)
        print(f"cold start (exports the default learner): {cold:.1f} s -> {text!r}")
        warm, text = first_answer(data_dir)
        print(f"warm start (loads the exported learner):   {warm:.1f} s -> {text!r}")


if __name__ == "__main__":
    main()
