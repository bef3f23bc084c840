"""The bot as a user meets it: `python -m bot` in its own process, against the sandbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox import SandboxThread
from tests.seeded import seed_data_dir

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
    env: dict[str, str]
    workdir: Path
    returncode: int | None = None
    stopped: bool = False
    own_group: bool = False  # the bot leads its own process group (see `kill_group`)
    python: str = sys.executable  # the interpreter that runs it

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

    def press(self, message_id: int, data: str, wait: float = 30, **fields: Any) -> Any:
        """A tap on an inline button of a bot message; returns the test API's answer."""
        body = {"message_id": message_id, "data": data, "wait": wait, **fields}
        response = self.client.post("/_sandbox/press", data={k: str(v) for k, v in body.items()})
        answer = response.json()
        assert response.status_code == 200, answer
        return answer

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Every message in the chat, current state."""
        return list(self.client.get(f"/_sandbox/chats/{chat_id}/messages").json()["messages"])

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """One message's current state."""
        return next(m for m in self.messages(chat_id) if m["message_id"] == message_id)

    def replies_until(
        self, answer: dict[str, Any], last: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        """The bot's messages after the one `answer` sent, once `count` of them satisfy `last`
        (waiting for that event, not for a time: a reply in several messages, such as /stats'
        text then its chart, is whole only when its last message came)."""
        after = answer["message"]["message_id"]
        chat = answer["message"]["chat"]["id"]

        def since(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [m for m in messages if m["from_bot"] and m["message_id"] > after]

        def whole(messages: list[dict[str, Any]]) -> bool:
            return sum(1 for m in since(messages) if last(m)) >= count

        return since(self.wait_for(chat, whole))

    def wait_for(
        self,
        chat_id: int,
        found: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 120,
    ) -> list[dict[str, Any]]:
        """The chat's messages (current state) once `found(messages)` holds.

        Checked again whenever something happens in the chat (the sandbox's long poll on its
        events), never after a fixed time; AssertionError after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/_sandbox/chats/{chat_id}/messages").json()
            if body["ok"]:
                seq, messages = body["seq"], list(body["messages"])
            else:  # no such chat yet
                seq, messages = self.client.get("/_sandbox/info").json()["seq"], []
            if found(messages):
                return messages
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not found in chat {chat_id} in {timeout} s: {messages}")
            self.client.get(
                "/_sandbox/events",
                params={"since": seq, "chat_id": chat_id, "timeout": min(left, 30)},
            )

    def fail(self, method: str, times: int = 1, **fields: Any) -> None:
        """Make the next `times` calls of a Bot API method fail (400, "file temporarily
        unavailable" unless `error_code` / `description` say otherwise)."""
        data = {"method": method, "times": str(times), **{k: str(v) for k, v in fields.items()}}
        response = self.client.post("/_sandbox/fail", data=data)
        assert response.status_code == 200, response.text

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

    def web_url(self) -> str:
        """Base URL of the bot's own HTTP server (health, metrics, webhook), from its log."""
        return _web_url(self.log())

    def kill(self) -> None:
        """SIGKILL the bot process: no chance to flush or clean up."""
        self.process.kill()
        self.process.wait()

    def kill_group(self) -> None:
        """SIGKILL the bot's whole process group (its workers too), as an OOM kill or
        `docker kill` would; needs `start_bot(..., own_group=True)`."""
        assert self.own_group
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def pending_updates(self) -> int:
        """Updates the Bot API still holds for the bot: not confirmed (polling) or not
        accepted (webhook), as getWebhookInfo reports them."""
        info = self.client.post(f"/bot{FAKE_TOKEN}/getWebhookInfo").json()
        return int(info["result"]["pending_update_count"])

    def metric(self, name: str) -> float:
        """One unlabelled value from the bot's /metrics."""
        text = httpx.get(f"{self.web_url()}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} in /metrics:\n{text}")

    def restart(self) -> None:
        """Start a new bot process against the same sandbox and data, once the old one ended."""
        if self.process.poll() is None:
            self.stop_process()
        self.returncode = None
        before = len(self.calls("setWebhook" if self.env.get("WEBHOOK_URL") else "getUpdates"))
        self.process = _spawn_bot(
            self.env, self.workdir, self.log_path, self.modules_path, self.own_group, self.python
        )
        _wait_until_polling(self, before)

    def modules(self) -> list[str]:
        """The modules the bot process had imported when it exited."""
        return list(json.loads(self.modules_path.read_text()))


def start_bot(
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    own_group: bool = False,
    seed: bool = True,
    python: str = sys.executable,
) -> RunningBot:
    """Start a sandbox and `python -m bot` against it; return once the bot is polling. With
    `own_group`, the bot leads a process group of its own (for `kill_group`). With `seed`
    (the default) its data folder starts with the compiled default as the active version
    (tests/seeded.py); without, the bot makes it as on a real first start. `python` runs it
    (another virtualenv's interpreter, e.g. one without torch)."""
    sandbox = SandboxThread(FAKE_TOKEN, for_tests=True)
    url = sandbox.start()
    log_path = workdir / "bot.log"
    modules_path = workdir / "modules.json"
    env = bot_env(
        workdir, {"TELEGRAM_TOKEN": FAKE_TOKEN, "TELEGRAM_API_URL": url, **(extra_env or {})}
    )
    if seed:
        seed_data_dir(Path(env["DATA_DIR"]))
    process = _spawn_bot(env, workdir, log_path, modules_path, own_group, python)
    bot = RunningBot(sandbox, url, process, log_path, modules_path, env, workdir)
    bot.python = python
    bot.own_group = own_group
    _wait_until_polling(bot, 0)
    return bot


def bot_env(workdir: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """A test bot's environment: no token, admins or model of the developer's, data in
    `workdir`, then `extra_env`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "ADMIN_", "MODEL_", "DATA_"))
    }
    env.update(
        {
            "DATA_DIR": str(workdir / "data"),
            "LOG_LEVEL": "DEBUG",
            "INFERENCE_THREADS": "1",
            "PORT": "0",  # a free port for /healthz and /metrics: test bots run side by side
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    return env


@dataclass
class SandboxModeBot:
    """`python -m bot` with no TELEGRAM_TOKEN: the bot serves its own sandbox."""

    process: subprocess.Popen[bytes]
    log_path: Path
    url: str  # the sandbox's, as the bot printed it for the user

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def web_url(self) -> str:
        """Base URL of the bot's own HTTP server (health, metrics), from its log."""
        return _web_url(self.log())

    def stop(self) -> int:
        """SIGTERM the bot and wait for it to exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_sandbox_mode_bot(workdir: Path) -> SandboxModeBot:
    """Start `python -m bot` without a token, its sandbox on a free port; return once the bot
    printed where to chat with it (after it is ready)."""
    log_path = workdir / "bot.log"
    env = bot_env(workdir, {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": "0"})
    process = _spawn_bot(env, workdir, log_path, workdir / "modules.json")
    bot = SandboxModeBot(process, log_path, "")
    opened = re.compile(
        r"Open (http://\S+) to chat with your bot \(sandbox — no Telegram needed\)"
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        match = opened.search(bot.log())
        if match:
            bot.url = match.group(1)
            return bot
        if process.poll() is not None:
            raise RuntimeError(f"the bot exited with {process.returncode}:\n{bot.log()}")
        time.sleep(0.2)
    bot.stop()
    raise RuntimeError(f"the bot did not say where to chat in time:\n{bot.log()}")


def _web_url(log: str) -> str:
    found = re.findall(r"health and metrics on (http://\S+)", log)
    assert found, log
    return str(found[-1])  # the latest process's (a restarted bot may use another port)


def _spawn_bot(
    env: dict[str, str],
    workdir: Path,
    log_path: Path,
    modules_path: Path,
    own_group: bool = False,
    python: str = sys.executable,
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [python, str(REPO / "tests" / "run_bot.py"), str(modules_path)],
            cwd=workdir,  # no stray .env from the developer's checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )


def _wait_until_polling(bot: RunningBot, polls_before: int) -> None:
    """Until the bot asks for updates (or, in webhook mode, has registered its webhook)."""
    method = "setWebhook" if bot.env.get("WEBHOOK_URL") else "getUpdates"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if bot.process.poll() is not None:
            bot.stop()
            raise RuntimeError(f"the bot exited with {bot.process.returncode}:\n{bot.log()}")
        if len(bot.calls(method)) > polls_before:
            return
        time.sleep(0.2)
    bot.stop()
    raise RuntimeError(f"the bot did not start polling in time:\n{bot.log()}")
