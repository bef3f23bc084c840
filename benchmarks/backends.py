"""Compiled serving (issue 15): the pool on fastai/torch, ONNX fp32 and ONNX int8, side by side.

Run: .venv/bin/python -m benchmarks.backends [--quick] [--rounds N]

Models, prepared in a temporary data folder by subprocesses (so that this process never
imports torch):
1. the bundled default EfficientNet-Lite0, by `python -m training compile default`, with
   calibration photos and labelled photos (folders named by ImageNet classes) so that an int8
   form is attempted;
2. a ResNet-34 learner built by fastai offline (torchvision's `resnet34`, `pretrained=False`:
   no weight download), fitted briefly from random weights on tests/trainingdata.py's photo
   folders at 224 px, exported, registered and compiled with calibration and labelled
   validation images.

Each (model, backend) is then measured in a fresh child process that imports `bot.app` (a
bot-like parent), picks the form as the bot does (`model.serving.served_form`), starts a
`Classifier` with the machine's default pool (one single-thread worker per core), and reports:
pool throughput (photos sent by concurrent callers), PSS of its process tree right after that
(itself, its workers, and any fork server / resource tracker: /proc/PID/smaps_rollup), then
single-photo latency (sequential). Rounds interleave the backends, order reversed every other
round, so that noise falls on all of them alike.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.procs import describe_machine, process_tree, pss_mib  # noqa: E402

LABELS = ("coffee", "cat", "rocket", "astronaut")
# The sample photos' ImageNet classes, for the default model's labelled check images (the
# accuracy figures for the default are against these guesses; agreement with fp32 is not).
IMAGENET_NAMES = {"coffee": "espresso", "cat": "tabby"}


# ------------------------------------------------------------------------------ helpers


def pct(samples: list[float], p: int) -> float:
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def run_logged(command: list[str], log: Path, what: str) -> float:
    """Run `command` in the repo with its output to `log`; the seconds it took."""
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "OMP_NUM_THREADS")}
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        sys.stdout.write(log.read_text()[-4000:])
        raise SystemExit(f"{what} failed (exit {done.returncode}); log above")
    return time.perf_counter() - started


# ---------------------------------------------------------------------- ResNet-34 (child)


def prepare_resnet(work: Path, quick: bool) -> None:
    """In a child process: fit, export, register and compile the ResNet-34 learner."""
    import warnings

    from fastai.callback.progress import ProgressCallback
    from fastai.torch_core import set_seed
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        Normalize,
        RandomSplitter,
        Resize,
        error_rate,
        get_image_files,
        imagenet_stats,
        parent_label,
        vision_learner,
    )
    from torchvision.models import resnet34

    from model.registry import Registry
    from tests.trainingdata import make_folders
    from training.compile import compile_version

    per_label = 8 if quick else 30
    valid_per_label = 4 if quick else 15
    epochs = 1 if quick else 4
    train, valid = work / "resnet-train", work / "resnet-valid"
    make_folders(train, dict.fromkeys(LABELS, per_label), seed=11)
    make_folders(valid, dict.fromkeys(LABELS, valid_per_label), seed=12)

    set_seed(0, reproducible=True)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_y=parent_label,
        splitter=RandomSplitter(0.2, seed=1),
        item_tfms=Resize(224),
        batch_tfms=[Normalize.from_stats(*imagenet_stats)],
    )
    dls = block.dataloaders(get_image_files(train), bs=8, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = vision_learner(
            dls, resnet34, pretrained=False, normalize=False, metrics=error_rate
        )
    learn.remove_cb(ProgressCallback)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.fit_one_cycle(epochs, 3e-3)
        loss, error = learn.validate()
    fit_s = time.perf_counter() - started
    learn.path = work
    learn.export("resnet34.pkl")
    registry = Registry(work / "data" / "models")
    card = registry.register(
        work / "resnet34.pkl",
        architecture="resnet34",
        labels=[str(v) for v in learn.dls.vocab],
        image_size=224,
        metrics={"error_rate": float(error), "valid_loss": float(loss)},
    )
    started = time.perf_counter()
    card = compile_version(registry, card.version, calibrate=train, images=valid)
    compile_s = time.perf_counter() - started
    print(
        "RESULT "
        + json.dumps(
            {
                "version": card.version,
                "fit_s": fit_s,
                "epochs": epochs,
                "train_images": len(get_image_files(train)),
                "valid_error_rate": float(error),
                "compile_s": compile_s,
            }
        ),
        flush=True,
    )


# ------------------------------------------------------------------ one measurement (child)


def photo() -> bytes:
    from tests import images

    return images.coffee_jpeg()


async def measure(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh child process: one (model, backend) through a Classifier, as the bot runs it."""
    import bot.app  # noqa: F401  (a bot-like parent: what the bot process imports)
    from bot.startup import available_cpus
    from model.pool import Classifier, PoolConfig
    from model.registry import Registry
    from model.serving import served_form
    from model.worker import WorkerConfig

    heavy = [name for name in ("torch", "fastai", "onnxruntime") if name in sys.modules]
    registry = Registry(Path(job["models_dir"]))
    card = registry.get(job["version"])
    served = served_form(registry, card, job["backend"])
    if served.backend != job["backend"]:
        return {"skipped": f"served {served.backend} instead: {served.note}"}
    cpus = available_cpus()
    pool = Classifier(
        WorkerConfig(
            models_dir=registry.models_dir,
            model_path=served.path,
            model_sha256=served.sha256,
            compiled=served.compiled,
            threads=1,
        ),
        PoolConfig.for_machine(cpus, timeout_s=600),
    )
    data = photo()
    started = time.perf_counter()
    await pool.start()
    start_s = time.perf_counter() - started
    try:
        for _ in range(2 * cpus):  # warm every worker
            await pool.classify(data)
        remaining = job["photos"]
        answered = 0

        async def caller() -> None:
            nonlocal remaining, answered
            while remaining > 0:
                remaining -= 1
                await pool.classify(data)
                answered += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(job["callers"])))
        throughput = answered / (time.perf_counter() - started)
        me = os.getpid()
        tree = process_tree(me)
        workers = pool.worker_pids()
        memory = {
            "pss_total": sum(pss_mib(pid) for pid in tree),
            "pss_parent": pss_mib(me),
            "pss_workers": sum(pss_mib(pid) for pid in workers),
            "processes": len(tree),
        }
        latencies = []
        for _ in range(job["latency"]):
            t = time.perf_counter()
            prediction = await pool.classify(data)
            latencies.append((time.perf_counter() - t) * 1000)
        return {
            "throughput": throughput,
            "latencies_ms": latencies,
            "start_s": start_s,
            "workers": len(workers),
            "served_backend": pool.backend,
            "top1": f"{prediction.scores[0].label} {prediction.scores[0].probability:.2f}",
            "parent_heavy_modules": heavy,
            **memory,
        }
    finally:
        await pool.close()


# --------------------------------------------------------------------------- orchestration


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def prepare(work: Path, quick: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """Both models registered and compiled in `work/data`; their versions and what was found."""
    from tests.trainingdata import make_folders

    per = 6 if quick else 16
    calibrate, imagenet = work / "default-calibrate", work / "default-labelled"
    make_folders(calibrate, dict.fromkeys(LABELS, per), seed=21)
    written = make_folders(work / "default-tmp", dict.fromkeys(IMAGENET_NAMES, per), seed=22)
    for label, paths in written.items():  # the same photos, in folders named by ImageNet class
        target = imagenet / IMAGENET_NAMES[label]
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            path.rename(target / path.name)
    info: dict[str, Any] = {}
    info["default_compile_s"] = run_logged(
        [
            sys.executable,
            "-m",
            "training",
            "compile",
            "default",
            "--data-dir",
            str(work / "data"),
            "--calibrate",
            str(calibrate),
            "--images",
            str(imagenet),
        ],
        work / "default-compile.log",
        "training compile default",
    )
    print((work / "default-compile.log").read_text().rstrip(), flush=True)
    started = time.perf_counter()
    log = work / "resnet.log"
    command = [sys.executable, "-m", "benchmarks.backends", "--prepare-resnet", str(work)]
    run_logged([*command, *(["--quick"] if quick else [])], log, "ResNet-34 preparation")
    info["resnet_prepare_s"] = time.perf_counter() - started
    text = log.read_text()
    print("\n".join(line for line in text.splitlines() if not line.startswith("RESULT ")))
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
    info["resnet"] = result
    from model.registry import Registry

    default = Registry(work / "data" / "models").get("default").version
    return {"EfficientNet-Lite0 (default)": default, "ResNet-34": result["version"]}, info


def record_lines(models_dir: Path, version: str) -> list[str]:
    from model.compiled import describe
    from model.registry import Registry

    record = Registry(models_dir).get(version).compile_record
    lines = describe(record)
    if record is not None:
        lines.append(f"int8: {record.int8}")
    return lines


def int8_kept(models_dir: Path, version: str) -> bool:
    from model.compiled import FORM_INT8
    from model.registry import Registry

    record = Registry(models_dir).get(version).compile_record
    return record is not None and FORM_INT8 in record.forms


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.backends", "--measure", json.dumps(job)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stdout.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"measurement {job['model']} / {job['backend']} failed")
    result: dict[str, Any] = json.loads(lines[-1][7:])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (2)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-resnet", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(asyncio.run(measure(json.loads(args.measure)))))
        return
    if args.prepare_resnet:
        prepare_resnet(args.prepare_resnet, args.quick)
        return

    began = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else 2)
    photos, callers, latency = (24, 8, 6) if args.quick else (200, 16, 30)
    print(describe_machine(("torch", "fastai", "onnxruntime")))
    print(f"at start: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="verdict-backends-") as tmp:
        work = Path(tmp)
        versions, info = prepare(work, args.quick)
        models_dir = work / "data" / "models"
        prepared_s = time.perf_counter() - began
        print(f"prepared in {prepared_s:.0f} s ({load()})", flush=True)
        configs = []
        for model, version in versions.items():
            print(f"{model} ({version}):")
            for line in record_lines(models_dir, version):
                print(f"  {line}")
            for backend in ("fastai", "onnx", "onnx-int8"):
                if backend == "onnx-int8" and not int8_kept(models_dir, version):
                    continue
                configs.append((model, version, backend))
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_ in range(rounds):
            order = configs if round_ % 2 == 0 else list(reversed(configs))
            for model, version, backend in order:
                job = {
                    "model": model,
                    "models_dir": str(models_dir),
                    "version": version,
                    "backend": backend,
                    "photos": photos,
                    "callers": callers,
                    "latency": latency,
                }
                result = run_child(job)
                if "skipped" in result:
                    print(f"  round {round_ + 1} {model} {backend}: skipped ({result['skipped']})")
                    continue
                results.setdefault((model, backend), []).append(result)
                print(
                    f"  round {round_ + 1} {model:28} {backend:9} {result['throughput']:6.1f} "
                    f"photos/s, p50 {pct(result['latencies_ms'], 50):6.1f} ms, PSS "
                    f"{result['pss_total']:5.0f} MiB, start {result['start_s']:.1f} s "
                    f"({result['top1']}; {load()})",
                    flush=True,
                )
    elapsed = time.perf_counter() - began

    print()
    print(
        f"Pool: one single-thread worker per core; {photos} photos from {callers} callers; "
        f"latency: {latency} photos one at a time; {rounds} interleaved round(s)."
    )
    header = (
        "| model | backend | photos/s (pool) | p50 ms | p95 ms | PSS MiB (parent + workers) "
        "| parent | workers | processes |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for (model, backend), runs in results.items():
        rates = [r["throughput"] for r in runs]
        lat = [x for r in runs for x in r["latencies_ms"]]
        row = {
            "rate": statistics.mean(rates),
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
            "pss": statistics.mean(r["pss_total"] for r in runs),
            "parent": statistics.mean(r["pss_parent"] for r in runs),
            "workers": statistics.mean(r["pss_workers"] for r in runs),
        }
        summary[(model, backend)] = row
        spread = f" ({min(rates):.1f}–{max(rates):.1f})" if len(rates) > 1 else ""
        print(
            f"| {model} | {backend} | {row['rate']:.1f}{spread} | {row['p50']:.1f} | "
            f"{row['p95']:.1f} | {row['pss']:.0f} | {row['parent']:.0f} | {row['workers']:.0f} "
            f"| {runs[0]['processes']} |"
        )
    heavy = {m for runs in results.values() for r in runs for m in r["parent_heavy_modules"]}
    print(f"heavy modules in the bot-like parent: {sorted(heavy) or 'none'}")

    print()
    print("Ratios")
    default, resnet = "EfficientNet-Lite0 (default)", "ResNet-34"

    def ratio(model: str, backend: str, target: float) -> None:
        fast, base = summary.get((model, backend)), summary.get((model, "fastai"))
        if fast is None or base is None:
            print(f"  {model} {backend} pool / fastai pool: not measured")
            return
        value = fast["rate"] / base["rate"]
        verdict = "met" if value >= target else "NOT met"
        print(
            f"  {model} {backend} pool / fastai pool = {fast['rate']:.1f} / {base['rate']:.1f} "
            f"= {value:.2f}× (target ≥ {target}×: {verdict})"
        )

    ratio(default, "onnx", 1.7)
    ratio(resnet, "onnx-int8", 2.0)
    ratio(resnet, "onnx", 0.0)
    onnx = summary.get((default, "onnx"))
    if onnx is not None:
        verdict = "met" if onnx["pss"] <= 400 else "NOT met"
        print(
            f"  bot-like parent + 2 ONNX workers (default model) PSS = {onnx['pss']:.0f} MiB "
            f"(target ≤ 400: {verdict}); fastai pool {summary[(default, 'fastai')]['pss']:.0f}"
            " MiB"
        )
    print()
    print(
        f"preparation {prepared_s:.0f} s (default compile {info['default_compile_s']:.0f} s; "
        f"ResNet-34 {info['resnet_prepare_s']:.0f} s: fit {info['resnet']['fit_s']:.0f} s over "
        f"{info['resnet']['epochs']} epoch(s) on {info['resnet']['train_images']} images, "
        f"validation error {info['resnet']['valid_error_rate']:.1%}, compile "
        f"{info['resnet']['compile_s']:.0f} s); whole run {elapsed:.0f} s"
    )
    print(f"at end: {load()}")


if __name__ == "__main__":
    main()
