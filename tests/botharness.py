"""The bot as a user meets it: `python -m bot` in its own process, against the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.sandbox import SandboxThread

REPO = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "987654321:VERDICT-fake-token_NEVER-LOG-ME"


@dataclass
class RunningBot:
    """A bot process plus the sandbox it talks to, and a client for the sandbox's test API."""

    sandbox: SandboxThread
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    modules_path: Path
    client: httpx.Client = field(init=False)
    returncode: int | None = None
    stopped: bool = False

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def send(self, wait: float = 60, files: dict[str, Any] | None = None, **fields: Any) -> Any:
        """A user message through the test API; returns its JSON answer (with the replies)."""
        data = {key: str(value) for key, value in fields.items()}
        response = self.client.post(
            "/_sandbox/send", params={"wait": wait}, data=data, files=files
        )
        body = response.json()
        assert response.status_code == 200, body
        return body

    def send_photo(self, data: bytes, **fields: Any) -> Any:
        return self.send(files={"photo": ("photo.jpg", data, "image/jpeg")}, **fields)

    def send_document(self, data: bytes, name: str, mime: str, **fields: Any) -> Any:
        return self.send(files={"document": (name, data, mime)}, **fields)

    def calls(self, method: str) -> list[dict[str, Any]]:
        body = self.client.get("/_sandbox/calls", params={"method": method}).json()
        return list(body["calls"])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop_process(self) -> int:
        """SIGTERM the bot and wait for it to exit, leaving the sandbox up; its exit status."""
        if self.returncode is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.returncode = self.process.wait()
        return self.returncode

    def stop(self) -> int:
        """Stop the bot (SIGTERM), then the sandbox; idempotent. Returns the bot's status."""
        status = self.stop_process()
        if not self.stopped:
            self.stopped = True
            self.client.close()
            self.sandbox.stop()
        return status

    def modules(self) -> list[str]:
        """The modules the bot process had imported when it exited."""
        return list(json.loads(self.modules_path.read_text()))


def start_bot(workdir: Path, extra_env: dict[str, str] | None = None) -> RunningBot:
    """Start a sandbox and `python -m bot` against it; return once the bot is polling."""
    sandbox = SandboxThread(FAKE_TOKEN)
    url = sandbox.start()
    log_path = workdir / "bot.log"
    modules_path = workdir / "modules.json"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "ADMIN_", "MODEL_", "DATA_"))
    }
    env.update(
        {
            "TELEGRAM_TOKEN": FAKE_TOKEN,
            "TELEGRAM_API_URL": url,
            "DATA_DIR": str(workdir / "data"),
            "LOG_LEVEL": "DEBUG",
            "INFERENCE_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "run_bot.py"), str(modules_path)],
            cwd=workdir,  # no stray .env from the developer's checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bot = RunningBot(sandbox, url, process, log_path, modules_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            bot.stop()
            raise RuntimeError(f"the bot exited with {process.returncode}:\n{bot.log()}")
        if bot.calls("getUpdates"):
            return bot
        time.sleep(0.2)
    bot.stop()
    raise RuntimeError(f"the bot did not start polling in time:\n{bot.log()}")
