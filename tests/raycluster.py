"""A local Ray cluster for the tests and benchmarks: one head node started with `ray start`,
every process it started ended afterwards, and a file server laid out as the bot's
``GET /models/{version}/{file}`` for replicas to fetch models from.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from model.serve_app import DEFAULT_CONFIG, SERVE_API, load_config

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 180.0


@dataclass
class FileServer:
    """The bot's model endpoint, as the replicas see it: ``/models/{version}/{file}``."""

    root: Path
    url: str
    requests: list[str]


@contextlib.contextmanager
def file_server(models: Path) -> Iterator[FileServer]:
    """Serve `models` (a registry's folder) over HTTP under /models/ from a thread."""
    site = Path(tempfile.mkdtemp(prefix="verdict-site-"))
    (site / "models").symlink_to(models)
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if not self.path.startswith("/models/") or self.path.count("/") != 3:
                self.send_error(404)
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(models, f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()


def local_config(cache_dir: Path, port: int, **options: Any) -> dict[str, Any]:
    """deploy/serve.yaml as a test or benchmark runs it here: the proxy on the head only, at
    127.0.0.1:`port`, models cached in `cache_dir`, a fixed number of replicas, and the
    deployment's `options` (num_replicas, max_ongoing_requests, ...) set."""
    config = copy.deepcopy(load_config(DEFAULT_CONFIG))
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = config["applications"]
    app["args"]["cache_dir"] = str(cache_dir)
    (deployment,) = app["deployments"]
    # None, not absent: an option the config leaves out keeps the code's value (the decorator's),
    # and under an autoscaling_config Serve ignores num_replicas.
    deployment["autoscaling_config"] = None
    deployment.update(options)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_members(sid: int) -> list[int]:
    """The pids of the processes in session `sid` (what `ray start` started, its children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A local head node; its dashboard's URL. Every process it started is ended after."""
    temp = tempfile.mkdtemp(prefix="vray", dir="/tmp")  # short: Ray's socket paths
    dashboard_port = free_port()
    ray = Path(sys.executable).parent / "ray"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),  # the replicas import `model` from this checkout
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        **(extra_env or {}),
    }
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [
            str(ray), "start", "--head", "--block",
            "--num-cpus", str(num_cpus),
            "--disable-usage-stats",
            "--port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port),
            "--include-dashboard", "true",
            "--temp-dir", temp,
        ],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if head.poll() is not None:
                raise RuntimeError(
                    f"ray start exited: {(Path(temp) / 'ray-start.log').read_text()}"
                )
            with contextlib.suppress(OSError, ValueError):
                get_json(f"{dashboard}/api/ray/version", timeout=2)
                get_json(f"{dashboard}{SERVE_API}", timeout=10)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray dashboard did not come up")
            time.sleep(1.0)
        yield dashboard
    finally:
        sid = head.pid  # its own session (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(30)
        deadline = time.monotonic() + 20
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if head.poll() is None:
            head.kill()
            head.wait(10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


class Forwarder:
    """TCP forwarders from local ports to the cluster's proxy and dashboard, started later:
    until `start`, nothing listens there (a cluster that is down, as the bot sees it)."""

    def __init__(self, port: int, proxy_port: int, dashboard_port: int) -> None:
        self.port, self.dashboard_port = port, free_port()
        self._routes = ((self.port, proxy_port), (self.dashboard_port, dashboard_port))
        self._servers: list[socket.socket] = []
        self._open: list[socket.socket] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        for listen, target in self._routes:
            server = socket.create_server(("127.0.0.1", listen))
            self._servers.append(server)
            threading.Thread(target=self._accept, args=(server, target), daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        for sock in [*self._servers, *self._open]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, server: socket.socket, target: int) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target))
            self._open += [client, upstream]
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join()
        for sock in (client, upstream):
            sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
