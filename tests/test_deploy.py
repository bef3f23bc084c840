"""Deployment: the Dockerfile and compose file (statically; `make compose-check` runs them for
real), the health check, the worker count under a container's CPU limit, a data folder the
bot cannot write, the pinned versions and the lean torch install."""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import load_settings
from bot.healthcheck import healthz_url
from bot.startup import available_cpus, cgroup_cpu_quota, data_dir_problem

REPO = Path(__file__).resolve().parent.parent


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_torch = _load_script("install_torch")

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with ${VAR:-default} filled in from `environ`, as compose does."""
    values = environ or {}

    def fill(match: re.Match[str]) -> str:
        return values.get(match[1]) or match[2] or ""

    data = yaml.safe_load(_INTERPOLATION.sub(fill, (REPO / "docker-compose.yml").read_text()))
    assert isinstance(data, dict)
    return data


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments out."""
    joined = re.sub(r"\\\n", " ", dockerfile())
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def final_stage() -> list[tuple[str, str]]:
    """The last stage: the full image, the default target."""
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def stage(name: str) -> list[tuple[str, str]]:
    """The instructions of the stage named `name` (FROM ... AS name), its FROM first."""
    steps = instructions()
    start = next(
        i
        for i, (word, args) in enumerate(steps)
        if word == "FROM" and args.endswith(f" AS {name}")
    )
    end = next((i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM"), len(steps))
    return steps[start:end]


def runs(steps: list[tuple[str, str]]) -> list[str]:
    """The commands of the RUN steps, each `&&` part on its own."""
    joined = " && ".join(args for word, args in steps if word == "RUN")
    return [part.strip() for part in joined.split("&&")]


def walk(node: object) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


# ----------------------------------------------------------------------------- compose


def test_compose_has_the_bot_with_env_file_volume_healthcheck_and_restart() -> None:
    bot = compose()["services"]["bot"]
    assert bot["build"]["target"] == "full" and bot["image"] == "verdict:latest"
    assert bot["env_file"] == ".env"
    assert compose({"ENV_FILE": "/tmp/check.env"})["services"]["bot"]["env_file"] == (
        "/tmp/check.env"
    )
    assert "verdict-data:/data" in bot["volumes"] and "verdict-data" in compose()["volumes"]
    assert bot["environment"]["DATA_DIR"] == "/data"
    assert bot["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.healthcheck"]
    assert bot["restart"] in ("unless-stopped", "always")
    assert bot["deploy"]["resources"]["limits"]["memory"]
    assert bot["stop_grace_period"]


def test_the_published_port_and_the_health_check_follow_port() -> None:
    """PORT moves the mapping and the container's own PORT together; the health check reads
    PORT in the container, so no port number is written into it."""
    for environ, port in (({}, "8080"), ({"PORT": "9090"}, "9090")):
        for name in ("bot", "bot-gpu"):
            service = compose(environ)["services"][name]
            assert service["ports"] == [f"{port}:{port}"], name
            assert str(service["environment"]["PORT"]) == port, name
            assert not re.search(r"\d{4}", " ".join(service["healthcheck"]["test"])), name


def test_no_fixed_cpu_limit_that_a_small_host_would_refuse() -> None:
    """A `cpus` above the host's CPUs makes compose refuse to start (a 1-vCPU VPS)."""
    assert not [key for key, _ in walk(compose()) if key in ("cpus", "cpu_count", "cpuset")]


def test_both_images_are_built_here_never_pulled() -> None:
    services = compose()["services"]
    assert {name: s["pull_policy"] for name, s in services.items()} == {
        "bot": "build",
        "bot-gpu": "build",
        "bot-cluster": "build",
        "ray-head": "build",
        # The image ray-head builds: never pulled either.
        "ray-worker": "never",
    }
    assert services["ray-worker"]["image"] == services["ray-head"]["image"]
    args = services["bot"]["build"]["args"]
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    overridden = compose({"BASE_IMAGE": "verdict-base:bookworm", "TORCH_INDEX": "https://x/"})
    assert overridden["services"]["bot"]["build"]["args"] == {
        "BASE_IMAGE": "verdict-base:bookworm",
        "TORCH_INDEX": "https://x/",
    }


def test_operators_pick_the_slim_image_through_the_environment() -> None:
    """VERDICT_TARGET picks the Dockerfile's target, VERDICT_IMAGE the tag; GPU stays full."""
    picked = compose({"VERDICT_TARGET": "slim", "VERDICT_IMAGE": "verdict:slim"})["services"]
    assert picked["bot"]["build"]["target"] == "slim"
    assert picked["bot"]["image"] == "verdict:slim"
    assert picked["bot-gpu"]["build"]["target"] == "full"
    targets = {args.split(" AS ")[1] for word, args in instructions() if " AS " in args}
    assert {"slim", "full"} <= targets


def test_compose_gpu_profile_reserves_a_gpu_and_takes_pypis_cuda_build() -> None:
    gpu = compose()["services"]["bot-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX"] == "https://pypi.org/simple"
    assert gpu["environment"]["INFERENCE_DEVICE"] == "cuda"


def test_every_env_example_key_reaches_the_container_through_env_file() -> None:
    """Nothing in compose overrides the operator's token or admin ids."""
    environment = compose()["services"]["bot"]["environment"]
    assert not {"TELEGRAM_TOKEN", "ADMIN_IDS", "WEBHOOK_SECRET"} & set(environment)


# ----------------------------------------------------------------------------- Dockerfile


def test_nothing_makes_the_build_contact_docker_hub_for_a_frontend() -> None:
    """A `# syntax=` line makes every build pull the Dockerfile frontend image."""
    assert not re.search(r"^#\s*syntax\s*=", dockerfile(), re.MULTILINE | re.IGNORECASE)


def test_the_base_image_is_a_build_argument() -> None:
    """Both targets grow from the same base (the runtime stage: user, data folder, PATH); the
    full image is the last stage, so a plain `docker build` makes it, as before."""
    steps = instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert [args for word, args in steps if word == "FROM"] == [
        "${BASE_IMAGE} AS requirements",
        "${BASE_IMAGE} AS runtime",
        "runtime AS full-install",
        "full-install AS seed",
        "runtime AS serving-install",
        "serving-install AS slim",
        "serving-install AS cluster",
        "full-install AS full",
    ]
    assert final_stage() == stage("full")


def test_the_dependency_layer_depends_on_the_dependency_list_and_the_pins_only() -> None:
    """Before the dependencies are installed, the final stage copies only constraints.txt and
    the dependency list the first stage read out of pyproject.toml: a README or source edit
    leaves the cached layer alone. The slim image's dependencies are a stage of their own
    (serving-install), which the slim and the cluster images both grow from."""
    for name, lists, then in (
        ("full-install", "/requirements.txt /requirements-train.txt ./", "full-install"),
        ("serving-install", "/requirements.txt ./", "slim"),
    ):
        steps = stage(name)
        install = next(i for i, (word, args) in enumerate(steps) if "-r requirements.txt" in args)
        copied = [args for word, args in steps[:install] if word in ("COPY", "ADD")]
        assert copied == ["constraints.txt ./", f"--from=requirements {lists}"], name
        later = " ".join(args for word, args in (steps + stage(then))[install:] if word == "COPY")
        assert "README.md" in later and "bot ./bot" in later, name
    assert [args for word, args in stage("requirements") if word == "COPY"] == [
        "pyproject.toml /src/pyproject.toml"
    ]
    assert [word for word, _ in stage("runtime")] == ["FROM", "ENV", "WORKDIR", "RUN"]


def test_every_install_in_the_image_is_pinned_by_constraints_txt() -> None:
    installs = [part for part in runs(stage("full-install")) if "pip install" in part]
    assert len(installs) == 4, installs
    for command in installs[:3]:
        assert "-c constraints.txt" in command, command
    assert '--index-url "${TORCH_INDEX}" torch torchvision' in installs[1]
    assert installs[2].endswith("-r requirements.txt -r requirements-train.txt")
    # The project itself last, without dependencies: nothing unpinned comes in with it.
    assert installs[3].startswith("pip install --no-deps")
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile()
    assert not [word for word, _ in final_stage() if word in ("RUN", "COPY", "ADD")]


def test_the_slim_image_installs_the_serving_dependencies_only() -> None:
    """No torch, fastai or the `train` extra in its install line, and a RUN that fails the
    build when torch imports there anyway."""
    slim = runs(stage("serving-install")) + runs(stage("slim"))
    installs = [part for part in slim if "pip install" in part]
    assert installs == [
        "pip install -c constraints.txt --upgrade pip setuptools",
        "pip install -c constraints.txt -r requirements.txt",
        "pip install --no-deps --no-build-isolation .",
    ]
    text = " ".join(args for _, args in stage("serving-install") + stage("slim"))
    assert "requirements-train" not in text and "TORCH_INDEX" not in text
    assert any('python -c "import torch"' in part and "exit 1" in part for part in slim)
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    heavy = {"torch", "torchvision", "fastai", "timm", "onnx", "onnxscript"}
    base = {re.split(r"[\[<>=!~; ]", r)[0].lower() for r in project["dependencies"]}
    train = {
        re.split(r"[\[<>=!~; ]", r)[0].lower() for r in project["optional-dependencies"]["train"]
    }
    assert not base & heavy and heavy <= train
    assert {"onnxruntime", "numpy", "pillow"} <= base


def test_the_slim_image_carries_the_compiled_default_and_seeds_with_it() -> None:
    """Made in the full install at build time (compiled, bundled without its learner), copied
    in, and named by VERDICT_SEED_MODELS for the first start."""
    seed = " ".join(runs(stage("seed")))
    assert "python -m training compile default" in seed
    assert "--without-learner" in seed and "/seed/default.tar" in seed
    slim = stage("slim")
    assert ("COPY", "--from=seed /seed /opt/verdict/seed") in slim
    assert ("ENV", "VERDICT_SEED_MODELS=/opt/verdict/seed") in slim


def test_both_images_run_alike() -> None:
    """The same user, volume, port, health check, stop signal and command."""
    tail = [
        (word, args)
        for word, args in final_stage()
        if word in ("USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "CMD")
    ]
    assert tail == [
        (word, args)
        for word, args in stage("slim")
        if word in ("USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "CMD")
    ]
    assert len(tail) == 6


def test_the_image_runs_as_a_normal_user_with_a_health_check() -> None:
    stage = final_stage()
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    (health,) = [args for word, args in stage if word == "HEALTHCHECK"]
    assert health.endswith('CMD ["python", "-m", "bot.healthcheck"]') and "8080" not in health
    assert stage[-1] == ("CMD", '["python", "-m", "bot"]')


def test_no_secret_is_baked_into_the_image() -> None:
    text = dockerfile()
    assert "TELEGRAM_TOKEN" not in text and "WEBHOOK_SECRET" not in text
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_the_sandbox_stays_out_of_the_image() -> None:
    """sandbox/ is for development: not copied, not even in the build context."""
    copied = [
        source
        for word, args in instructions()
        if word == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    ]
    assert "bot" in copied and not [c for c in copied if "sandbox" in c or c in (".", "./")]
    assert "sandbox" in (REPO / ".dockerignore").read_text().split()


# ----------------------------------------------------------------------------- pins


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.!]+", version), line
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_constraints_pin_every_dependency_and_agree_with_pyproject() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["train"] + extras["test"]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement)[0]).lower()
        assert name in pinned, requirement
        exact = re.search(r"==([\w.]+)$", requirement)
        if exact:
            assert pinned[name] == exact[1], requirement
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"


def test_every_pin_installs_on_the_oldest_python_the_project_allows() -> None:
    """A pin that wants Python 3.11.5 breaks the image on Debian 12's 3.11.2 (soupsieve 3.x
    did). Read from the installed packages' metadata, for those installed at their pin."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    oldest = re.fullmatch(r">=\s*(\d+\.\d+)", floor)
    assert oldest, floor
    checked = 0
    for name, version in pins().items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version.split("+")[0] != version:
            continue
        needs = dist.metadata.get("Requires-Python") or ""
        assert SpecifierSet(needs).contains(f"{oldest[1]}.0"), f"{name}=={version}: {needs}"
        checked += 1
    assert checked > 50


def test_make_installs_with_the_constraints_and_torch_first() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in recipe.splitlines()[1:]]
    assert lines[0] == "$(BIN)/python scripts/install_torch.py $(BIN)/pip"
    assert lines[1] == (
        '$(BIN)/pip install --quiet --constraint $(CONSTRAINTS) -e ".[train,test,cluster]"'
    )
    assert "CONSTRAINTS := constraints.txt" in makefile


def test_version_prints_the_installed_versions_without_importing_torch() -> None:
    code = (
        "import sys; from bot.__main__ import main; status = main(['--version']); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(status)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith(f"verdict {metadata.version('verdict')} (python 3.")
    assert "torch 2.14.1" in first and "torchvision 0.29.1" in first and "fastai 2." in first
    assert second == "no torch"


# ----------------------------------------------------------------------------- health check


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def run_healthcheck(port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
    env.update({"PORT": str(port), "HTTP_HOST": "0.0.0.0", "PYTHONPATH": str(REPO)})
    return subprocess.run(
        [sys.executable, "-m", "bot.healthcheck"],
        cwd=tmp_path,  # no .env of the developer's
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_health_check_asks_the_port_from_port(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Healthz)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert run_healthcheck(port, tmp_path).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    down = run_healthcheck(port, tmp_path)
    assert down.returncode == 1 and f"127.0.0.1:{port}/healthz" in down.stdout


def test_the_health_check_url_follows_the_settings() -> None:
    def url(**environ: str) -> str:
        return healthz_url(load_settings(environ, env_file=None))

    assert url(PORT="9090", HTTP_HOST="0.0.0.0") == "http://127.0.0.1:9090/healthz"
    assert url(PORT="81", HTTP_HOST="10.1.2.3") == "http://10.1.2.3:81/healthz"
    assert url(PORT="81", HTTP_HOST="::") == "http://127.0.0.1:81/healthz"


# ----------------------------------------------------------------------------- CPUs


def cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup holding `files` and a fake /proc/self/cgroup saying `proc`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc_file = tmp_path / "proc-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


def test_a_cgroup_v2_quota_in_a_container_caps_the_cpus(tmp_path: Path) -> None:
    """`docker run --cpus 1.5`: cpu.max "150000 100000" at the container's cgroup root."""
    root, proc = cgroup(
        tmp_path, "0::/\n", {"cgroup.controllers": "cpu memory", "cpu.max": "150000 100000\n"}
    )
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    assert available_cpus(root, proc) == 1


def test_the_tightest_quota_on_the_way_up_counts(tmp_path: Path) -> None:
    """On a host, the process's cgroup and every ancestor may carry a quota."""
    root, proc = cgroup(
        tmp_path,
        "0::/machine.slice/app.scope\n",
        {
            "cgroup.controllers": "cpu",
            "cpu.max": "max 100000\n",
            "machine.slice/cpu.max": "200000 100000\n",
            "machine.slice/app.scope/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.0)


def test_no_quota_means_the_affinity_decides(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_quota_is_read_too(tmp_path: Path) -> None:
    """Docker on cgroup v1 names the container's cgroup by its host path in /proc, but mounts
    that cgroup itself at /sys/fs/cgroup/cpu."""
    root, proc = cgroup(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.0)
    assert available_cpus(root, proc) == 1


def test_a_quota_below_one_cpu_still_gets_one_worker(tmp_path: Path) -> None:
    root, proc = cgroup(
        tmp_path, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "50000 100000"}
    )
    assert available_cpus(root, proc) == 1


def test_unreadable_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "missing") is None
    root, proc = cgroup(tmp_path, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "junk"})
    assert cgroup_cpu_quota(root, proc) is None


# ----------------------------------------------------------------------------- data folder


def deny(monkeypatch: pytest.MonkeyPatch, blocked: Path) -> None:
    """os.access says no for `blocked` (the tests run as root, whom chmod does not stop)."""
    real = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        return Path(path) != blocked and real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_data_folder_the_bot_cannot_write_gets_a_fix_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bind mount owned by someone else: the message names the folder and the chown."""
    data = tmp_path / "data"
    (data / "feedback").mkdir(parents=True)
    assert data_dir_problem(data) is None
    deny(monkeypatch, data / "feedback")
    problem = data_dir_problem(data)
    assert problem is not None
    assert f"cannot write {data / 'feedback'}." in problem
    assert f"sudo chown -R {os.getuid()}:{os.getgid()} ./data" in problem
    assert [p.name for p in data.iterdir()] == ["feedback"]  # it created nothing


def test_a_missing_data_folder_is_checked_where_it_would_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deny(monkeypatch, tmp_path)
    problem = data_dir_problem(tmp_path / "data" / "deeper")
    assert problem is not None and f"cannot write {tmp_path}." in problem
    assert not (tmp_path / "data").exists()


def test_the_bot_refuses_to_start_on_an_unwritable_data_folder(tmp_path: Path) -> None:
    """As the image's user on a root-owned bind mount: exit 2 with the fix, no traceback."""
    code = (
        "import os, sys; from pathlib import Path; real = os.access; "
        f"os.access = lambda p, m, **k: Path(p) != Path({str(tmp_path)!r}) and real(p, m, **k); "
        "from bot.__main__ import main; sys.exit(main())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATA_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "TELEGRAM_TOKEN": "123:abc"})
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "is not writable" in result.stderr and "sudo chown -R" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_image_user_owns_its_data_folder() -> None:
    """What a named volume copies on first use; a bind mount needs the chown the bot names."""
    run = " ".join(args for word, args in stage("runtime") if word == "RUN")
    assert "useradd --create-home --uid 10001 verdict" in run
    assert "chown verdict:verdict /data" in run


# ----------------------------------------------------------------------------- lean install


def test_torch_comes_from_the_cpu_index_only_without_a_gpu_and_when_it_answers() -> None:
    def choose(gpu: bool, answers: bool, **environ: str) -> str | None:
        index, why = install_torch.choose_index(environ, "linux", lambda: gpu, lambda _: answers)
        assert why
        chosen: str | None = index
        return chosen

    cpu = install_torch.CPU_INDEX
    assert choose(gpu=False, answers=True) == cpu
    assert choose(gpu=False, answers=False) is None  # PyPI, with the other dependencies
    assert choose(gpu=True, answers=True) is None  # PyPI's CUDA build
    assert choose(gpu=True, answers=True, TORCH_INDEX="https://mirror/") == "https://mirror/"
    index, _ = install_torch.choose_index({}, "darwin", lambda: False, lambda _: True)
    assert index is None


def test_an_unreachable_index_is_given_up_on_quickly() -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    assert not install_torch.reachable(f"http://127.0.0.1:{port}/whl/cpu", timeout_s=2)
    assert not install_torch.reachable("http://no-such-host.invalid/whl/cpu", timeout_s=2)
    assert time.monotonic() - started < 10
