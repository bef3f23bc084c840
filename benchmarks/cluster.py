"""Ray Serve vs the local pool (issue 16): the same compiled default, side by side, in one run.

Run: .venv/bin/python -m benchmarks.cluster [--quick] [--rounds N] [--photos N] [--clients N]

The model is the bundled default compiled by `training compile default`
(tests/seeded.py `compiled_default_models`), served as its ONNX fp32 form. What is compared:

- the local pool: `model.pool.Classifier`, 2 single-thread ONNX workers started by `spawn`,
  the machine's pool defaults otherwise (batches of up to 4, no wait);
- Ray Serve: a local head (`ray start --head --num-cpus 2`, tests/raycluster.py) running
  `model/serve_app.py` from deploy/serve.yaml as the tests change it (the proxy on the head
  only, local ports) with a fixed `num_replicas` (2, or 1: the running config re-PUT with only
  that changed) and limits large enough that nothing is refused busy; reached through the bot's
  `bot.remote.RemoteClassifier`, a fresh one per measurement (its start delivers the model and
  waits until every replica serves it). The batching is serve.yaml's (`@serve.batch`: up to 8,
  10 ms wait); a fourth configuration, 2 replicas with no batch wait (the app's args changed:
  Serve replaces the replicas), tells what of the lone photo's time that wait is.

Each measurement, after a warm-up: throughput (`--photos` photos from `--clients` concurrent
clients, cycling through four test images from tests/images.py), the CPU time per photo of
every process involved (/proc/PID/stat: this process, the pool's workers; or the replicas, the
Serve proxy and Ray's other processes), RSS and PSS right after the burst (/proc), latency of
lone photos (one at a time), and memory again after 5 s idle. Rounds alternate the order
(pool, Serve × 2, Serve × 1, Serve × 2 without wait; then the reverse), so that noise on a
shared machine falls on all of them alike; before the cluster starts, the pool is measured
once alone (no Ray on the machine). The benchmark process stands in for the bot on both
sides; its own memory is not the bot's and is not reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.backends import load, pct  # noqa: E402
from benchmarks.procs import (  # noqa: E402
    CLOCK,
    cpu_s,
    describe_machine,
    process_tree,
    pss_mib,
    rss_mib,
)
from model.types import ClassifierError, Prediction  # noqa: E402

POOL, SERVE2, SERVE1 = "pool, 2 workers", "Serve, 2 replicas", "Serve, 1 replica"
NOWAIT = "Serve, 2 replicas, no batch wait"
ALONE = "pool, 2 workers, no Ray running"
WAIT_S = 240.0
IDLE_S = 5.0  # after the lone photos, before memory is read again (pool workers trim at 2 s)


# ------------------------------------------------------------------------------ /proc


def name_of(pid: int) -> str:
    """The process's name; for a Python program, its script or module."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if not comm.startswith("python"):
        return comm
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "-m" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.endswith(".py"):
            return Path(arg).name
        if arg == "-c" and i + 1 < len(argv):  # e.g. the dashboard's forkserver
            words = argv[i + 1].replace(";", " ").split()
            return f"{comm} -c {words[1] if len(words) > 1 else ''}".strip()
    return comm


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


class CpuMeter:
    """CPU seconds spent by groups of processes between `start` and `stop`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {pid: cpu_s(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> dict[str, float]:
        return {
            name: sum(max(0.0, cpu_s(pid) - self.before.get(pid, 0.0)) for pid in pids)
            for name, pids in self.groups.items()
        }


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK


def mine(ray_sid: int | None) -> list[int]:
    """This process, its descendants (the pool's workers) and the Ray head's session."""
    from tests.raycluster import session_members

    return sorted(
        set(process_tree(os.getpid())) | set(session_members(ray_sid) if ray_sid else [])
    )


def memory(pids: list[int]) -> dict[str, float]:
    return {
        "processes": len(pids),
        "rss": sum(rss_mib(pid) for pid in pids),
        "pss": sum(pss_mib(pid) for pid in pids),
    }


# ----------------------------------------------------------------------------- the load


def test_photos() -> list[tuple[str, bytes]]:
    from tests import images

    return [
        ("coffee JPEG 600×400", images.coffee_jpeg()),
        ("chelsea JPEG 451×300", images.chelsea_jpeg()),
        ("chelsea PNG 451×300", images.encode(images.chelsea(), "PNG")),
        ("coffee JPEG, EXIF rotated", images.with_exif_orientation(images.coffee(), 6)),
    ]


Classify = Callable[[bytes], Awaitable[Prediction]]


@dataclass
class Burst:
    answered: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


async def burst(classify: Classify, photos: list[bytes], total: int, clients: int) -> Burst:
    """`total` photos from `clients` concurrent callers, each sending its next when answered."""
    result = Burst()
    sent = 0

    async def client() -> None:
        nonlocal sent
        while sent < total:
            data = photos[sent % len(photos)]
            sent += 1
            try:
                await classify(data)
                result.answered += 1
            except ClassifierError as exc:
                result.errors[type(exc).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


async def lone(classify: Classify, photos: list[bytes], count: int) -> list[float]:
    """Milliseconds for each of `count` photos sent one at a time."""
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await classify(photos[i % len(photos)])
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def warm(classify: Classify, photos: list[bytes], clients: int) -> None:
    await burst(classify, photos, 4 * clients, clients)
    await lone(classify, photos, 2 * len(photos))


# ----------------------------------------------------------------------------- the cluster


def replica_pids(dashboard: str) -> list[int]:
    from model.serve_app import serve_details, status_of

    replicas = status_of(serve_details(dashboard))[1].get("replicas") or []
    return [int(r["pid"]) for r in replicas if r.get("state") == "RUNNING" and r.get("pid")]


def redeploy(dashboard: str, replicas: int, batch_wait_s: float) -> float:
    """Re-PUT the running config (the model's user_config kept) with `replicas` replicas and
    `@serve.batch`'s wait; the seconds until exactly that many replicas run, new ones if the
    application's args changed (Serve then replaces every replica), and it is HEALTHY."""
    from model.serve_app import (
        APP_NAME,
        DEPLOYMENT_NAME,
        put_config,
        running_config,
        serve_details,
        status_of,
    )

    started = time.perf_counter()
    details = serve_details(dashboard)
    config = running_config(details)
    (app,) = [a for a in config["applications"] if a.get("name") == APP_NAME]
    (entry,) = [d for d in app.get("deployments", []) if d.get("name") == DEPLOYMENT_NAME]
    entry["autoscaling_config"] = None  # see tests.raycluster.local_config
    entry["num_replicas"] = replicas
    restart = app["args"].get("batch_wait_timeout_s") != batch_wait_s
    app["args"]["batch_wait_timeout_s"] = batch_wait_s
    old = {r["replica_id"] for r in status_of(details)[1].get("replicas") or []}
    put_config(dashboard, config)
    deadline = time.monotonic() + WAIT_S
    state = "?"
    while time.monotonic() < deadline:
        time.sleep(0.5)
        with contextlib.suppress(urllib.error.URLError, OSError):
            now = serve_details(dashboard)
            application, deployment = status_of(now)
            status = application.get("status")
            listed = deployment.get("replicas") or []
            state = f"{status}, {deployment.get('status')}, {[r.get('state') for r in listed]}"
            if (
                status == "RUNNING"
                and deployment.get("status") == "HEALTHY"
                and len(listed) == replicas
                and all(r.get("state") == "RUNNING" for r in listed)
                and not (restart and old & {r["replica_id"] for r in listed})
            ):
                return time.perf_counter() - started
    raise SystemExit(f"the deployment did not settle on {replicas} replica(s): {state}")


def replica_infos(inference: str, replicas: int, tries: int = 60) -> dict[str, dict[str, Any]]:
    """/info of each replica (the proxy picks one per call: ask until all have answered)."""
    from tests.raycluster import get_json

    seen: dict[str, dict[str, Any]] = {}
    for _ in range(tries):
        info = get_json(f"{inference}/info")
        seen[str(info.get("replica"))] = info
        if len(seen) >= replicas:
            break
    return seen


# --------------------------------------------------------------------------- measurements


@dataclass
class Run:
    """One configuration's measurements in one round."""

    rate: float
    answered: int
    errors: Counter[str]
    latencies_ms: list[float]
    cpu_ms: dict[str, float]  # CPU milliseconds per photo answered, by group
    busy_memory: dict[str, dict[str, float]]  # right after the burst, by group (MiB)
    machine_cores: float  # cores busy during the burst, the whole machine's
    others_cores: float  # of which by processes not this benchmark's (nor Ray's)
    idle_memory: dict[str, dict[str, float]]  # IDLE_S after the lone photos
    busy: int = 0
    failed: int = 0
    retried: int = 0
    note: str = ""


async def measure(bench: Bench, classify: Classify, groups: dict[str, list[int]]) -> Run:
    """One configuration once: its burst of `bench.total` photos from `bench.clients` clients
    (rate, CPU per photo by group, memory), then `bench.latency` lone photos, then idle."""
    photos, clients = bench.photos, bench.clients
    await warm(classify, photos, clients)
    meter, everything = CpuMeter(groups), CpuMeter({"mine": mine(bench.ray_sid)})
    meter.start()
    everything.start()
    machine = machine_busy_s()
    result = await burst(classify, photos, bench.total, clients)
    machine = (machine_busy_s() - machine) / result.seconds
    spent = meter.stop()
    others = max(0.0, machine - everything.stop()["mine"] / result.seconds)
    busy_memory = {name: memory(pids) for name, pids in groups.items()}
    latencies = await lone(classify, photos, bench.latency)
    await asyncio.sleep(IDLE_S)
    return Run(
        rate=result.rate,
        answered=result.answered,
        errors=result.errors,
        latencies_ms=latencies,
        cpu_ms={k: 1000 * v / max(1, result.answered) for k, v in spent.items()},
        busy_memory=busy_memory,
        machine_cores=machine,
        others_cores=others,
        idle_memory={name: memory(pids) for name, pids in groups.items()},
    )


def show(round_: int, name: str, run: Run) -> None:
    cpu = " + ".join(f"{k} {v:.1f}" for k, v in run.cpu_ms.items())
    errors = f", errors {dict(run.errors)}" if run.errors else ""
    print(
        f"  round {round_} {name:33} {run.rate:6.1f} photos/s, lone p50 "
        f"{pct(run.latencies_ms, 50):5.1f} ms p95 {pct(run.latencies_ms, 95):5.1f} ms; "
        f"CPU ms/photo: {cpu}; machine {run.machine_cores:.2f} cores busy, others "
        f"{run.others_cores:.2f}; busy {run.busy}, failed {run.failed}, retried {run.retried}"
        f"{errors}{run.note} ({load()})",
        flush=True,
    )


@contextlib.contextmanager
def compiled_default() -> Iterator[Any]:
    """The compiled default's ONNX fp32 form (`CompiledModel`); its data folder is removed
    after."""
    from model.registry import Registry
    from model.serving import served_form
    from tests.seeded import compiled_default_models

    models = compiled_default_models()
    try:
        registry = Registry(models)
        card = registry.active()
        assert card is not None
        compiled = served_form(registry, card, "onnx").compiled
        assert compiled is not None
        yield compiled
    finally:
        shutil.rmtree(models.parent, ignore_errors=True)


@dataclass
class Bench:
    """What every measurement needs; the results, by configuration."""

    photos: list[bytes]
    total: int
    clients: int
    latency: int
    ray_sid: int | None = None  # the Ray head's session, once it runs
    results: dict[str, list[Run]] = field(default_factory=dict)

    def keep(self, round_: int, name: str, run: Run) -> None:
        self.results.setdefault(name, []).append(run)
        show(round_, name, run)


async def measure_pool(bench: Bench, pool: Any, round_: int, name: str) -> None:
    before = pool.stats()
    groups = {"bot": [os.getpid()], "workers": pool.worker_pids()}
    run = await measure(bench, pool.classify, groups)
    after = pool.stats()
    run.busy = after.busy_refusals - before.busy_refusals
    run.failed = after.failed - before.failed + after.expired - before.expired
    batches = after.batches - before.batches
    run.note = f"; mean batch {(after.answered - before.answered) / max(1, batches):.1f}"
    bench.keep(round_, name, run)


@dataclass
class Serve:
    """The cluster: its dashboard, the proxy's URL, the bot's model endpoint, the model."""

    dashboard: str
    inference: str
    files_url: str
    compiled: Any
    yaml_wait: float  # serve.yaml's batch_wait_timeout_s
    replicas: int = 2
    batch_wait_s: float = -1.0  # what runs now

    def ray_groups(self) -> dict[str, list[int]]:
        """The replicas, the Serve proxy, and every other process of the head's session."""
        from tests.raycluster import session_members

        replicas = replica_pids(self.dashboard)
        sid = session_of(replicas[0]) if replicas else None
        members = [pid for pid in session_members(sid) if pid not in replicas] if sid else []
        proxy = [pid for pid in members if name_of(pid) == "ray::ProxyActor"]
        others = [pid for pid in members if pid not in proxy]
        return {"replicas": replicas, "proxy": proxy, "ray": others}

    async def remote(self, replicas: int, batch_wait_s: float, clients: int) -> Any:
        """A started `RemoteClassifier`, `replicas` replicas serving the model."""
        from bot.remote import RemoteClassifier
        from model.serve_app import serve_details, status_of

        if (replicas, batch_wait_s) != (self.replicas, self.batch_wait_s):
            took = await asyncio.to_thread(redeploy, self.dashboard, replicas, batch_wait_s)
            print(
                f"  re-PUT with {replicas} replica(s), batch wait {1000 * batch_wait_s:.0f} ms: "
                f"settled in {took:.1f} s"
            )
            self.replicas, self.batch_wait_s = replicas, batch_wait_s
        compiled = self.compiled
        remote = RemoteClassifier(
            self.inference,
            self.dashboard,
            self.files_url,
            initial=(compiled.path.parent / "model.pkl", None, compiled),
            timeout_s=120,
            queue_size=max(256, 8 * clients),
            retry_delay_s=0.5,
        )
        started = time.perf_counter()
        await remote.start()
        took = time.perf_counter() - started
        if not remote.model_name:  # start() does not raise: it keeps delivering
            await remote.close()
            raise SystemExit(f"the cluster does not serve the model: {remote.stats()}")
        _, deployment = status_of(await asyncio.to_thread(serve_details, self.dashboard))
        running = [r for r in deployment.get("replicas", []) if r.get("state") == "RUNNING"]
        target = deployment.get("target_num_replicas")
        if len(running) != replicas or target != replicas:
            await remote.close()
            raise SystemExit(
                f"wanted {replicas} replica(s): the deployment has {len(running)} running, "
                f"target {target}; its config: {deployment.get('deployment_config')}"
            )
        print(f"  model delivered to {replicas} replica(s) in {took:.1f} s")
        return remote


async def measure_serve(bench: Bench, serve: Serve, round_: int, name: str) -> None:
    n, batch_wait_s = (1 if name == SERVE1 else 2), (0.0 if name == NOWAIT else serve.yaml_wait)
    remote = await serve.remote(n, batch_wait_s, bench.clients)
    try:
        groups = {"bot": [os.getpid()], **await asyncio.to_thread(serve.ray_groups)}
        run = await measure(bench, remote.classify, groups)
        stats = remote.stats()
        run.busy, run.failed = stats.busy_refusals, stats.failed
        run.retried = remote._counts["retried"]
        infos = await asyncio.to_thread(replica_infos, serve.inference, n)
    finally:
        await remote.close()
    split = []
    for info in infos.values():
        sizes = {int(k): v for k, v in (info.get("batch_sizes") or {}).items()}
        mean = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
        answered = (info.get("counts") or {}).get("answered", 0)
        split.append(f"{answered} answered, mean batch {mean:.1f}")
    run.note = f"; each replica since its start: {'; '.join(split)}"
    bench.keep(round_, name, run)


async def benchmark(args: argparse.Namespace) -> None:
    from model.pool import Classifier, PoolConfig
    from model.serve_app import put_config, wait_running
    from model.worker import WorkerConfig
    from tests.raycluster import file_server, free_port, local_config, ray_head

    began = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else 4)
    named = test_photos()
    bench = Bench(
        photos=[data for _, data in named],
        total=args.photos or (48 if args.quick else 400),
        clients=args.clients,
        latency=args.latency or (8 if args.quick else 60),
    )
    print(describe_machine(("ray", "onnxruntime", "aiohttp")))
    print(f"at start: {load()}", flush=True)
    with compiled_default() as compiled, tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        print(
            f"compiled default ready in {time.perf_counter() - began:.0f} s: {compiled.name} "
            f"({compiled.backend}, {compiled.path.stat().st_size / 1e6:.1f} MB)",
            flush=True,
        )
        models = compiled.path.parent.parent
        pool = Classifier(
            WorkerConfig(models_dir=models, compiled=compiled, threads=1),
            PoolConfig.for_machine(2, start_method="spawn", timeout_s=120),
        )
        await pool.start()
        try:
            await measure_pool(bench, pool, 0, ALONE)
            port = free_port()
            config = local_config(  # room for every client on one replica: none refused busy
                Path(tmp) / "replica-cache",
                port,
                num_replicas=2,
                max_ongoing_requests=max(32, 2 * bench.clients),
                max_queued_requests=max(256, 8 * bench.clients),
            )
            route = (config["applications"][0].get("route_prefix") or "").rstrip("/")
            with file_server(models) as files, ray_head(2) as dashboard:
                started = time.perf_counter()
                put_config(dashboard, config)
                wait_running(dashboard, timeout_s=WAIT_S)
                print(f"Serve app RUNNING {time.perf_counter() - started:.1f} s after the PUT")
                wait_s = float(config["applications"][0]["args"]["batch_wait_timeout_s"])
                inference = f"http://127.0.0.1:{port}{route}"
                serve = Serve(dashboard, inference, files.url, compiled, wait_s, 2, wait_s)
                replicas = replica_pids(dashboard)
                bench.ray_sid = session_of(replicas[0]) if replicas else None
                for round_ in range(1, rounds + 1):
                    order = [POOL, SERVE2, SERVE1, NOWAIT]
                    if round_ % 2 == 0:
                        order.reverse()
                    for name in order:
                        if name == POOL:
                            await measure_pool(bench, pool, round_, name)
                        else:
                            await measure_serve(bench, serve, round_, name)
                # The cluster idling: what its processes take, and what they are.
                groups = serve.ray_groups()
                everything = [pid for pids in groups.values() for pid in pids]
                idle = CpuMeter({"all": everything})
                idle.start()
                await asyncio.sleep(10.0)
                idle_cpu = idle.stop()["all"] / 10.0
                by_name: dict[str, list[float]] = {}
                for pid in groups["proxy"] + groups["ray"]:
                    by_name.setdefault(name_of(pid), []).append(rss_mib(pid))
        finally:
            await pool.close()
    report(bench, rounds, [n for n, _ in named], idle_cpu, serve.replicas, by_name)
    print(f"\nwhole run {time.perf_counter() - began:.0f} s; at end: {load()}")


def report(
    bench: Bench,
    rounds: int,
    named: list[str],
    idle_cpu: float,
    replicas_at_end: int,
    by_name: dict[str, list[float]],
) -> None:
    results = bench.results
    print()
    print(
        f"{bench.total} photos from {bench.clients} concurrent clients ({', '.join(named)}, "
        f"in turn), then {bench.latency} lone photos one at a time; {rounds} alternating "
        "round(s), a warm-up before each measurement; the first row once, before Ray started."
    )
    print(
        "| | photos/s, mean (range) | lone p50 ms | lone p95 ms | CPU ms per photo (bot process "
        "+ workers, or + replicas + Serve proxy + Ray's other processes) | cores busy "
        "(others') | busy / failed |"
    )
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, dict[str, float]] = {}
    for name in (ALONE, POOL, SERVE2, SERVE1, NOWAIT):
        runs = results.get(name, [])
        if not runs:
            continue
        rates = [r.rate for r in runs]
        lat = [x for r in runs for x in r.latencies_ms]
        cpu = {k: statistics.mean(r.cpu_ms[k] for r in runs) for k in runs[0].cpu_ms}
        row = summary[name] = {
            "rate": statistics.mean(rates),
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
        }
        spread = f" ({min(rates):.1f}–{max(rates):.1f})" if len(rates) > 1 else ""
        parts = " + ".join(f"{v:.1f}" for v in cpu.values())
        busy = sum(r.busy for r in runs)
        failed = sum(r.failed + sum(r.errors.values()) for r in runs)
        print(
            f"| {name} | {row['rate']:.1f}{spread} | {row['p50']:.1f} | {row['p95']:.1f} | "
            f"{parts} = {sum(cpu.values()):.1f} | "
            f"{statistics.mean(r.machine_cores for r in runs):.2f} "
            f"({statistics.mean(r.others_cores for r in runs):.2f}) | {busy} / {failed} |"
        )

    def ratio(a: str, b: str, key: str) -> str:
        """a/b of the means (pooled percentiles), and the range of the per-round ratios."""
        if a not in summary or b not in summary:
            return "not measured"
        x, y = summary[a][key], summary[b][key]
        text = f"{x:.1f} / {y:.1f} = {x / y:.2f}×"
        if key == "rate":
            per = [p.rate / q.rate for p, q in zip(results[a], results[b], strict=False)]
        else:
            at = 50 if key == "p50" else 95
            per = [
                pct(p.latencies_ms, at) / pct(q.latencies_ms, at)
                for p, q in zip(results[a], results[b], strict=False)
            ]
        if len(per) > 1:
            text += f" (rounds: {min(per):.2f}–{max(per):.2f})"
        return text

    print()
    print("| ratio | value |")
    print("|---|---|")
    ratios = (
        ("throughput, Serve 2 replicas / pool", SERVE2, POOL, "rate"),
        ("lone p50, Serve 2 replicas / pool", SERVE2, POOL, "p50"),
        ("lone p95, Serve 2 replicas / pool", SERVE2, POOL, "p95"),
        ("throughput, Serve 2 replicas / 1 replica", SERVE2, SERVE1, "rate"),
        ("throughput, pool with Ray idling / pool alone", POOL, ALONE, "rate"),
        ("lone p50, Serve 2 replicas without batch wait / pool", NOWAIT, POOL, "p50"),
        ("throughput, Serve 2 replicas without / with batch wait", NOWAIT, SERVE2, "rate"),
    )
    for label, a, b, key in ratios:
        print(f"| {label} | {ratio(a, b, key)} |")

    print()
    print(
        f"| memory, mean over rounds | processes | RSS MiB, right after the burst | PSS MiB, "
        f"right after | RSS MiB, {IDLE_S:.0f} s idle | PSS MiB, idle |"
    )
    print("|---|---|---|---|---|---|")
    rows = (
        (POOL, "workers", "pool workers"),
        (SERVE2, "replicas", "Serve replicas (2)"),
        (SERVE1, "replicas", "Serve replica (1)"),
        (SERVE2, "proxy", "Serve proxy"),
        (SERVE2, "ray", "Ray's other processes (head, controller, dashboard...)"),
    )
    for name, group, label in rows:
        runs = results.get(name, [])
        if not runs:
            continue
        cells = [f"{runs[0].busy_memory[group]['processes']:.0f}"]
        for when in ("busy", "idle"):
            held = [(r.busy_memory if when == "busy" else r.idle_memory)[group] for r in runs]
            cells += [f"{statistics.mean(h[k] for h in held):.0f}" for k in ("rss", "pss")]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    print(
        f"The cluster idle ({replicas_at_end} replica(s), proxy, controller, head): "
        f"{100 * idle_cpu:.1f}% of one core over 10 s"
    )
    print("Ray's processes but the replicas, by name, RSS MiB: " + ", ".join(
        f"{name} {sum(v):.0f}" + (f" (×{len(v)})" if len(v) > 1 else "")
        for name, v in sorted(by_name.items(), key=lambda item: -sum(item[1]))
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (4)")
    parser.add_argument("--photos", type=int, default=None, help="photos per burst (400)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--latency", type=int, default=None, help="lone photos (60)")
    asyncio.run(benchmark(parser.parse_args()))


if __name__ == "__main__":
    main()
