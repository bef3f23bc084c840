"""Worker-pool benchmark: limit, peer, pool and end to end, side by side in one run.

Run: .venv/bin/python -m benchmarks.bench [--quick]
1. limit — the bare model plus our preprocessing (decode, fastai's validation transforms,
   forward), in-process: best of one process using all cores and one single-thread process per
   core run side by side, over batch sizes; and single-image latency.
2. peer — a typical fastai bot (benchmarks/peer_bot.py: `learn.predict` in the async handler)
   end to end through python-telegram-bot and the sandbox.
3. pool — `Classifier` at 1, 4 and 16 concurrent callers.
4. end to end — `python -m bot` and the sandbox, 1, 4 and 16 simulated users sending at once.
Prints images/s, p50/p95/p99 latency, memory (RSS and PSS summed over the bot's processes) and
the ratios to the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.procs import describe_machine, process_tree, stat_fields  # noqa: E402
from tests import images  # noqa: E402
from tests.botharness import FAKE_TOKEN, start_bot  # noqa: E402


@dataclass
class Result:
    name: str
    images_per_s: float
    latencies_ms: list[float]
    memory: dict[str, float] | None = None
    cpu_ms_per_photo: dict[str, float] | None = None

    def pct(self, p: int) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def photo_bytes() -> bytes:
    """The benchmark photo, as the bot receives it (a Telegram-sized JPEG)."""
    return images.encode(images.coffee(), "JPEG", quality=87)


# --------------------------------------------------------------------------------- 1. limit


def limit_worker(threads: int, batch: int, count: int, models_dir: Path) -> dict[str, float]:
    """In this process: images/s at `batch` and single-image latency, with `threads`."""
    import torch

    torch.set_num_threads(threads)
    from model.worker import Engine, WorkerConfig

    engine = Engine(WorkerConfig(models_dir=models_dir, threads=threads))
    engine.warm_up()
    data = photo_bytes()
    items = [(i, data) for i in range(batch)]
    for _ in range(3):
        engine.classify(items)
    started = time.perf_counter()
    done = 0
    while done < count:
        engine.classify(items)
        done += batch
    rate = done / (time.perf_counter() - started)
    single = []
    for _ in range(30):
        t = time.perf_counter()
        engine.classify([(0, data)])
        single.append((time.perf_counter() - t) * 1000)
    return {"images_per_s": rate, "latency_ms": statistics.median(single)}


def run_limit_processes(threads: int, batch: int, processes: int, count: int, models: Path) -> Any:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench",
        "--limit-worker",
        f"{threads},{batch},{count},{models}",
    ]
    procs = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    outs = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in procs]
    return {
        "images_per_s": sum(o["images_per_s"] for o in outs),
        "latency_ms": statistics.mean(o["latency_ms"] for o in outs),
    }


def measure_limit(cores: int, count: int, models: Path) -> tuple[Result, list[str]]:
    lines = []
    best: tuple[float, str] = (0.0, "")
    latency = float("nan")
    for batch in (1, 4, 8):
        whole = run_limit_processes(cores, batch, 1, count, models)
        split = run_limit_processes(1, batch, cores, count, models)
        lines.append(
            f"  batch {batch}: 1 process × {cores} threads {whole['images_per_s']:.1f} img/s; "
            f"{cores} processes × 1 thread {split['images_per_s']:.1f} img/s"
        )
        if batch == 1:
            latency = whole["latency_ms"]
        for value, label in (
            (whole["images_per_s"], f"1×{cores} threads, batch {batch}"),
            (split["images_per_s"], f"{cores}×1 thread, batch {batch}"),
        ):
            best = max(best, (value, label))
    lines.append(f"  limit = {best[0]:.1f} img/s ({best[1]}); single-image {latency:.1f} ms")
    return Result("limit", best[0], [latency]), lines


# ------------------------------------------------------------------------------- 3. pool


async def measure_pool(callers: int, count: int, models: Path, cores: int) -> Result:
    from model.pool import Classifier, PoolConfig
    from model.worker import WorkerConfig

    pool = Classifier(
        WorkerConfig(models_dir=models, threads=1), PoolConfig.for_machine(cores, timeout_s=300)
    )
    await pool.start()
    data = photo_bytes()
    latencies: list[float] = []
    remaining = count

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            await pool.classify(data)
            latencies.append((time.perf_counter() - t) * 1000)

    for _ in range(2 * cores):
        await pool.classify(data)
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return Result(f"pool, {callers} callers", len(latencies) / elapsed, latencies)


async def single_worker_pss(models: Path) -> float:
    """PSS of one worker alone (spawned, sharing nothing): what one model process costs."""
    from model.pool import Classifier, PoolConfig
    from model.worker import WorkerConfig

    pool = Classifier(
        WorkerConfig(models_dir=models, threads=1),
        PoolConfig(workers=1, start_method="spawn", timeout_s=300),
    )
    await pool.start()
    try:
        for _ in range(10):
            await pool.classify(photo_bytes())
        (pid,) = pool.worker_pids()
        return memory_mib(pid)["Pss"]
    finally:
        await pool.close()


# ------------------------------------------------------------------------- 2 and 4. end to end


def drive_users(send: Any, users: int, count: int) -> tuple[float, list[float]]:
    """`users` threads each sending photos one after another until `count` are answered."""
    latencies: list[float] = []
    remaining = [count]

    def user(n: int) -> None:
        while True:
            if remaining[0] <= 0:
                return
            remaining[0] -= 1
            t = time.perf_counter()
            answer = send(n)
            if not answer["replies"]:
                raise RuntimeError(f"no reply: {answer}")
            latencies.append((time.perf_counter() - t) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    return len(latencies) / (time.perf_counter() - started), latencies


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(root: int) -> dict[str, float]:
    """CPU seconds so far: the bot process, its workers (and fork server), and this process
    (the sandbox and the simulated users)."""
    tree = process_tree(root)
    own = os.times()
    return {
        "bot process": cpu_seconds(root),
        "workers": sum(cpu_seconds(pid) for pid in tree if pid != root),
        "sandbox + users": own.user + own.system,
    }


def parent_of(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else 0


def memory_mib(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def tree_memory(root: int) -> dict[str, float]:
    tree = process_tree(root)
    per = {pid: memory_mib(pid) for pid in tree}
    # Workers are the fork server's children; the fork server and the resource tracker are
    # the bot's own children.
    workers = [pid for pid in tree if parent_of(pid) not in (root, 0) and pid != root]
    return {
        "processes": len(per),
        "rss_total": sum(v["Rss"] for v in per.values()),
        "pss_total": sum(v["Pss"] for v in per.values()),
        "pss_bot": per[root]["Pss"],
        "pss_one_worker": max((per[w]["Pss"] for w in workers), default=float("nan")),
    }


def measure_bot(levels: list[tuple[int, int]], workdir: Path) -> list[Result]:
    # The sandbox has no flood limits; the bot's own pacing (Telegram's ~30 messages/s, which
    # a real deployment must respect) is lifted so that the pipeline's capacity is measured.
    bot = start_bot(workdir, {"LOG_LEVEL": "WARNING", "MAX_MESSAGES_PER_SECOND": "10000"})
    data = photo_bytes()
    results = []
    try:
        first = bot.send_photo(data, user_id=100, settle=0)
        file_id = first["message"]["photo"][-1]["file_id"]

        def send(n: int) -> Any:
            # The same photo again by its file id, as Telegram does for a forwarded photo: the
            # sandbox then does no JPEG work, which would compete with the bot for the cores.
            # settle=0: answer as soon as the reply is there (no waiting for later edits).
            return bot.send(photo=file_id, user_id=1000 + n, settle=0)

        for n in range(4):  # warm every worker
            send(n)
        for users, count in levels:
            before = cpu_split(bot.process.pid)
            rate, latencies = drive_users(send, users, count)
            after = cpu_split(bot.process.pid)
            memory = tree_memory(bot.process.pid)
            result = Result(f"bot e2e, {users} users", rate, latencies, memory)
            result.cpu_ms_per_photo = {
                k: (after[k] - before[k]) * 1000 / len(latencies) for k in after
            }
            results.append(result)
    finally:
        bot.stop()
    return results


def measure_peer(levels: list[tuple[int, int]], workdir: Path, model: Path) -> list[Result]:
    from sandbox import SandboxThread

    sandbox = SandboxThread(FAKE_TOKEN)
    url = sandbox.start()
    env = dict(os.environ, TELEGRAM_TOKEN=FAKE_TOKEN, TELEGRAM_API_URL=url)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "peer_bot.py"), str(model)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    client = httpx.Client(base_url=url, timeout=600)
    data = photo_bytes()

    first = client.post(
        "/_sandbox/send",
        params={"wait": 600},
        data={"user_id": "2000", "settle": "0"},
        files={"photo": ("p.jpg", data, "image/jpeg")},
    ).json()  # waits until the peer has started and answered once
    file_id = first["message"]["photo"][-1]["file_id"]

    def send(n: int) -> Any:
        response = client.post(
            "/_sandbox/send",
            params={"wait": 600},
            data={"user_id": str(2000 + n), "settle": "0", "photo": file_id},
        )
        return response.json()

    results = []
    try:
        for users, count in levels:
            rate, latencies = drive_users(send, users, count)
            memory = tree_memory(process.pid)
            results.append(Result(f"peer e2e, {users} users", rate, latencies, memory))
    finally:
        process.terminate()
        process.wait(30)
        client.close()
        sandbox.stop()
    return results


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, for a smoke test")
    parser.add_argument("--limit-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.limit_worker:
        threads, batch, count, models = args.limit_worker.split(",", 3)
        print(json.dumps(limit_worker(int(threads), int(batch), int(count), Path(models))))
        return

    scale = 0.25 if args.quick else 1.0
    cores = len(os.sched_getaffinity(0))
    print(describe_machine(("torch",)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        from model.default import ensure_default_learner

        model_file = ensure_default_learner(models)
        limit, lines = measure_limit(cores, int(160 * scale), models)
        print("1. limit (bare model + our preprocessing, in-process)")
        print("\n".join(lines), flush=True)

        levels = [(1, int(40 * scale)), (4, int(160 * scale)), (16, int(320 * scale))]
        peer = measure_peer([(1, int(20 * scale)), (16, int(120 * scale))], Path(tmp), model_file)
        pool = [asyncio.run(measure_pool(c, n, models, cores)) for c, n in levels]
        bot = measure_bot(levels, Path(tmp))
        alone = asyncio.run(single_worker_pss(models))

    print()
    header = f"{'':24} {'img/s':>7} {'×limit':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(header)
    for result in [*peer, *pool, *bot]:
        print(
            f"{result.name:24} {result.images_per_s:7.1f} "
            f"{result.images_per_s / limit.images_per_s:7.2f} "
            f"{result.pct(50):8.1f} {result.pct(95):8.1f} {result.pct(99):8.1f}"
        )
    print()
    for result in [*peer, *bot]:
        if result.memory:
            m = result.memory
            print(
                f"{result.name:24} memory: {m['processes']:.0f} processes, "
                f"RSS {m['rss_total']:.0f}"
                f" MiB, PSS {m['pss_total']:.0f} MiB (bot {m['pss_bot']:.0f}, one worker "
                f"{m['pss_one_worker']:.0f})"
            )
    for result in bot:
        if result.cpu_ms_per_photo:
            split = ", ".join(f"{k} {v:.1f}" for k, v in result.cpu_ms_per_photo.items())
            print(f"{result.name:24} CPU ms per photo: {split}")
    e2e16 = bot[-1]
    peer16 = peer[-1]
    e2e1 = bot[0]
    memory = e2e16.memory or {}
    print()
    print("Targets")
    print(
        f"  e2e 16 users / limit = {e2e16.images_per_s / limit.images_per_s:.2f} (target ≥ 0.85)"
    )
    print(
        f"  e2e 16 users / peer  = {e2e16.images_per_s / peer16.images_per_s:.2f} (target ≥ 1.5)"
    )
    print(
        f"  p50 with 1 user = {e2e1.pct(50):.1f} ms vs limit single-image "
        f"{limit.latencies_ms[0]:.1f} ms + 20 (target ≤ {limit.latencies_ms[0] + 20:.1f})"
    )
    if memory:
        print(
            f"  PSS of the bot with its {cores} workers = {memory['pss_total']:.0f} MiB; one "
            f"worker alone (spawned, sharing nothing) = {alone:.0f} MiB; ratio "
            f"{memory['pss_total'] / alone:.2f} (target ≤ 1.5)"
        )


if __name__ == "__main__":
    main()
