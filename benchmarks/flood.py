"""Flood benchmark: many users send a 12 MP photo at the same moment; what the bot's memory does.

Run: .venv/bin/python -m benchmarks.flood [--users 300] [--megapixels 12] [--as document|photo]

`python -m bot` against the sandbox, as in the tests; every user sends the same 12 MP JPEG
(scikit-image's `coffee()` scaled up, with a little sensor-like noise: a few MB, as a phone
writes one) at once — as a file (`document`, the default: the bot downloads it whole, the worst
case) or as a photo (the sandbox compresses it to 1280 px, as Telegram does). Prints how many
got an answer, "busy" or anything else, how long the last one waited, and the bot process's
memory from /proc/<pid>/status: VmRSS before the flood and VmHWM (its peak) after, plus the
peak summed over its worker processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import images  # noqa: E402
from tests.botharness import RunningBot, start_bot  # noqa: E402


def phone_jpeg(megapixels: float, quality: int = 92) -> bytes:
    """A 4:3 photo of `megapixels`, as a phone camera writes it (texture included)."""
    import numpy as np
    from PIL import Image

    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = round(width * 3 / 4)
    picture = images.coffee().resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 10, (height, width, 3))
    textured = np.clip(np.asarray(picture, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return images.encode(Image.fromarray(textured), "JPEG", quality=quality)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def flood(bot: RunningBot, data: bytes, users: int, kind: str) -> tuple[list[str], list[float]]:
    """Every user sends `data` at the same moment; their replies' texts and waits (s)."""
    gate = threading.Barrier(users)

    def one(n: int) -> tuple[str, float]:
        # A connection of its own, as each user's phone has.
        with httpx.Client(base_url=bot.url, timeout=600) as client:
            gate.wait()
            started = time.monotonic()
            response = client.post(
                "/_sandbox/send",
                params={"wait": 300},
                data={"user_id": str(20_000 + n)},
                files={kind: ("IMG_0001.JPG", data, "image/jpeg")},
            )
        answer = response.json()
        texts = [reply.get("text") or "" for reply in answer.get("replies", [])]
        return (texts[0] if len(texts) == 1 else f"<{len(texts)} replies>"), (
            time.monotonic() - started
        )

    with ThreadPoolExecutor(users) as pool:
        results = list(pool.map(one, range(users)))
    return [text for text, _ in results], [wait for _, wait in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--as", dest="kind", choices=("document", "photo"), default="document")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the bot")
    args = parser.parse_args()

    data = phone_jpeg(args.megapixels)
    print(
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python "
        f"{platform.python_version()}; {args.users} users × a {args.megapixels:g} MP JPEG of "
        f"{len(data) / 1e6:.1f} MB, sent as a {args.kind}",
        flush=True,
    )
    # The bot's defaults otherwise, its pacing at Telegram's ~30 messages/s included.
    extra = {"LOG_LEVEL": "WARNING", **dict(item.split("=", 1) for item in args.env)}
    with tempfile.TemporaryDirectory() as tmp:
        bot = start_bot(Path(tmp), extra)
        try:
            warm = bot.send_document(images.coffee_jpeg(), "warm.jpg", "image/jpeg", user_id=1)
            assert warm["replies"], warm
            pid = bot.process.pid
            workers = children(pid)
            rss_before = status_kib(pid, "VmRSS")
            started = time.monotonic()
            texts, waits = flood(bot, data, args.users, args.kind)
            elapsed = time.monotonic() - started
            peak = status_kib(pid, "VmHWM")
            worker_peaks = [status_kib(w, "VmHWM") for w in workers if Path(f"/proc/{w}").exists()]
        finally:
            status = bot.stop()
    busy = sum(t.startswith("I'm busy") for t in texts)
    other = [t for t in texts if t.startswith("<") or "went wrong" in t]
    answered = len(texts) - busy - len(other)
    print(
        f"answered {answered}, busy {busy}, anything else {len(other)} {other[:3]}; "
        f"all replies in {elapsed:.1f} s (median wait {statistics.median(waits):.1f} s, "
        f"longest {max(waits):.1f} s); the bot exited {status}"
    )
    print(
        f"bot process: VmRSS {rss_before / 1024:.0f} MiB before, VmHWM {peak / 1024:.0f} MiB "
        f"(peak, +{(peak - rss_before) / 1024:.0f} MiB); {len(worker_peaks)} other processes "
        f"(fork server, workers): VmHWM {sum(worker_peaks) / 1024:.0f} MiB in all"
    )


if __name__ == "__main__":
    main()
