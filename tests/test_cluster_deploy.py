"""The cluster's deployment files: the Dockerfile's `cluster` target and the compose file's
`cluster` profile (statically; `make cluster-check` runs them for real), and the Ray node's
entry script, deploy/ray-node.sh, run with a stand-in `ray` (no cluster needed)."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.test_deploy import REPO, compose, runs, stage

SCRIPT = REPO / "deploy" / "ray-node.sh"


def serve_config() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text())
    assert isinstance(data, dict)
    return data


def cluster_services() -> dict[str, Any]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}


# ----------------------------------------------------------------------------- Dockerfile


def test_the_cluster_image_adds_the_cluster_extra_to_the_serving_install() -> None:
    """The slim image's dependency layer, then the `cluster` extra at the pins, in a layer that
    only the dependency list and the pins decide; no torch; model/ and deploy/, no bot/."""
    (read,) = [args for word, args in stage("requirements") if word == "RUN"]
    assert read.endswith("['optional-dependencies']['cluster']))\" > /requirements-cluster.txt")
    steps = stage("cluster")
    assert steps[0] == ("FROM", "serving-install AS cluster")
    installs = [part for part in runs(steps) if "pip install" in part]
    assert installs == [
        "pip install -c constraints.txt -r requirements-cluster.txt",
        "pip install --no-deps --no-build-isolation .",
    ]
    copies = [args for word, args in steps if word == "COPY"]
    assert copies == [
        "--from=requirements /requirements-cluster.txt ./",
        "pyproject.toml README.md ./",
        "model ./model",
        "deploy ./deploy",
    ]
    assert any("the cluster image holds" in part for part in runs(steps))


def test_the_cluster_image_runs_a_ray_node_as_a_normal_user_with_nothing_kept() -> None:
    steps = stage("cluster")
    words = [word for word, _ in steps]
    assert ("USER", "verdict") in steps
    assert "VOLUME" not in words and "HEALTHCHECK" not in words  # the compose file checks
    assert steps[-1] == ("CMD", '["/app/deploy/ray-node.sh", "head"]')
    assert ("ENV", "RAY_USAGE_STATS_ENABLED=0") in steps
    assert os.access(SCRIPT, os.X_OK)


# ----------------------------------------------------------------------------- compose


def test_without_a_profile_compose_starts_only_the_bot() -> None:
    services = compose()["services"]
    assert [name for name, s in services.items() if not s.get("profiles")] == ["bot"]
    assert set(cluster_services()) == {"bot-cluster", "ray-head", "ray-worker"}


def test_the_cluster_bot_classifies_on_the_head_and_serves_models_to_the_replicas() -> None:
    """INFERENCE_URL names the head's proxy and the Serve config's route prefix;
    MODEL_BASE_URL the bot's own service and the port it listens on."""
    (app,) = serve_config()["applications"]
    for environ, port in (({}, "8080"), ({"PORT": "9090"}, "9090")):
        bot = compose(environ)["services"]["bot-cluster"]
        env = bot["environment"]
        inference = urlsplit(env["INFERENCE_URL"])
        assert (inference.hostname, inference.port) == ("ray-head", 8000)
        assert inference.port == serve_config()["http_options"]["port"]
        assert inference.path == app["route_prefix"]
        base = urlsplit(env["MODEL_BASE_URL"])
        assert (base.hostname, str(base.port)) == ("bot-cluster", port)
        assert str(env["PORT"]) == port and bot["ports"] == [f"{port}:{port}"]
        assert bot["build"]["target"] == "slim"
        assert bot["volumes"] == ["verdict-data:/data"]
        assert bot["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.healthcheck"]
        assert set(bot["depends_on"]) == {"ray-head", "ray-worker"}


def test_the_ray_nodes_share_one_image_and_get_no_bot_secrets() -> None:
    services = cluster_services()
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["build"]["target"] == "cluster"
    assert worker["image"] == head["image"] and "build" not in worker
    for node in (head, worker):
        assert "env_file" not in node
        assert set(node["environment"]) == {"MODEL_TOKEN"}
        assert node["init"] is True and node["shm_size"]
        assert node["restart"] == "unless-stopped"
        assert node["deploy"]["resources"]["limits"]["memory"]
    assert head["command"] == ["/app/deploy/ray-node.sh", "head"]
    assert worker["command"] == ["/app/deploy/ray-node.sh", "worker", "ray-head:6379"]


def test_a_worker_can_be_scaled_and_only_this_host_reaches_the_dashboard() -> None:
    """No fixed name and no published port on a worker (`--scale ray-worker=3`); the head's
    dashboard (it runs jobs for anyone who reaches it) and proxy are published on 127.0.0.1."""
    services = cluster_services()
    worker = services["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert services["ray-head"]["ports"] == ["127.0.0.1:8265:8265", "127.0.0.1:8000:8000"]
    moved = compose({"RAY_DASHBOARD_PORT": "18265", "SERVE_PORT": "18000"})["services"]
    assert moved["ray-head"]["ports"] == ["127.0.0.1:18265:8265", "127.0.0.1:18000:8000"]


def test_the_head_is_healthy_when_the_application_of_the_serve_config_runs() -> None:
    (app,) = serve_config()["applications"]
    test = cluster_services()["ray-head"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"'{app['name']}'" in test[3] and "'RUNNING'" in test[3]
    assert "/api/serve/applications/" in test[3] and "curl" not in test[3]


# ----------------------------------------------------------------------------- ray-node.sh


class _Dashboard(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/serve/applications/" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"applications": {}}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A folder with a stand-in `ray` (logs its arguments and SIGTERM; blocks until told to
    stop, or exits with $FAKE_RAY_EXIT after a moment) and a `python` that fakes
    `-m model.serve_app deploy` (exit status $FAKE_DEPLOY_STATUS) and runs everything else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(
        bin_dir / "ray",
        "#!/usr/bin/env bash\n"
        'echo "ray $*" >>"$FAKE_LOG"\n'
        'trap \'echo "ray TERM" >>"$FAKE_LOG"; exit 1\' TERM\n'
        'if [ -n "${FAKE_RAY_EXIT:-}" ]; then sleep 1; exit "$FAKE_RAY_EXIT"; fi\n'
        "while :; do sleep 0.1; done\n",
    )
    _executable(
        bin_dir / "python",
        "#!/usr/bin/env bash\n"
        'if [ "$1" = -m ] && [ "$2" = model.serve_app ]; then\n'
        '    echo "deploy ${*:3}" >>"$FAKE_LOG"\n'
        '    exit "${FAKE_DEPLOY_STATUS:-0}"\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n',
    )
    return bin_dir


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _end_what_was_started() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Node:
    def __init__(self, fakes: Path, tmp_path: Path, *args: str, **environ: str) -> None:
        self.log = tmp_path / "calls.log"
        self.log.touch()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FAKE_"))},
            "PATH": f"{fakes}:{os.environ['PATH']}",
            "FAKE_LOG": str(self.log),
            **environ,
        }
        self.out = tmp_path / "out.log"
        with self.out.open("w") as out:
            # A session of its own: whatever is left of it at the end is ended with it.
            self.process = subprocess.Popen(
                ["bash", str(SCRIPT), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(self.process)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def wait_for_call(self, prefix: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in self.calls() if line.startswith(prefix)]
            if found:
                return found[0]
            assert self.process.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} call: {self.calls()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.process.wait(timeout_s)

    def output(self) -> str:
        return self.out.read_text()


def test_the_head_starts_ray_deploys_the_serve_config_and_stops_on_sigterm(
    fakes: Path, tmp_path: Path, dashboard: int
) -> None:
    node = Node(fakes, tmp_path, "head", "--num-cpus=0", RAY_DASHBOARD_PORT=str(dashboard))
    try:
        deploy = node.wait_for_call("deploy")
        started = node.calls()[0].split()
        assert started[:5] == [
            "ray",
            "start",
            "--head",
            "--port=6379",
            "--dashboard-host=0.0.0.0",
        ]
        assert f"--dashboard-port={dashboard}" in started and "--block" in started
        assert started[-1] == "--num-cpus=0"
        store = [a for a in started if a.startswith("--object-store-memory=")]
        assert len(store) == 1 and int(store[0].split("=")[1]) >= 80 * 2**20
        assert f"--address http://127.0.0.1:{dashboard}" in deploy
        assert f"--config {REPO / 'deploy' / 'serve.yaml'}" in deploy
        time.sleep(0.3)
        assert node.process.poll() is None  # it stays with the node
    finally:
        status = node.stop()
    assert status == 0, node.output()
    assert "ray TERM" in node.calls()


def test_a_failed_deployment_stops_the_head_with_status_1(
    fakes: Path, tmp_path: Path, dashboard: int
) -> None:
    node = Node(fakes, tmp_path, "head", RAY_DASHBOARD_PORT=str(dashboard), FAKE_DEPLOY_STATUS="1")
    assert node.wait() == 1
    assert node.calls()[-1] == "ray TERM"
    assert "the deployment failed" in node.output()


def test_a_worker_joins_once_the_head_answers_and_ends_with_its_node(
    fakes: Path, tmp_path: Path
) -> None:
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        node = Node(fakes, tmp_path, "worker", address, "--num-cpus=2", FAKE_RAY_EXIT="1")
        started = node.wait_for_call("ray start").split()
    assert started[2] == f"--address={address}" and started[-1] == "--num-cpus=2"
    assert "--head" not in started and "--block" in started
    # `ray start --block` ended by itself (a Ray process died, the head is gone): status 1,
    # for the restart policy to start it again.
    assert node.wait() == 1
    assert "the node ended" in node.output()


def test_a_worker_without_a_head_gives_up_after_join_timeout(fakes: Path, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    node = Node(fakes, tmp_path, "worker", f"127.0.0.1:{port}", JOIN_TIMEOUT="1")
    assert node.wait() == 1
    assert node.calls() == []
    assert "does not answer" in node.output()


def test_an_object_store_size_given_is_kept_and_a_bad_role_is_refused(
    fakes: Path, tmp_path: Path, dashboard: int
) -> None:
    node = Node(
        fakes,
        tmp_path,
        "head",
        "--object-store-memory=100000000",
        RAY_DASHBOARD_PORT=str(dashboard),
    )
    try:
        node.wait_for_call("deploy")
        started = node.calls()[0].split()
        assert [a for a in started if "object-store" in a] == ["--object-store-memory=100000000"]
    finally:
        assert node.stop() == 0
    refused = subprocess.run(["bash", str(SCRIPT), "tail"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage" in refused.stderr
