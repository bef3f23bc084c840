"""How long `python -m training fit` takes on this machine, for N images.

Run: .venv/bin/python -m benchmarks.fit_time [--per-label 50] [--epochs 4] [--phone]
Builds label folders from scikit-image's sample photos (tests/trainingdata.py: crops, flips,
colour jitter), registers the bundled default first (its one-time export is timed on its own),
then runs the fit with its default options in a fresh process and reports the wall time and
the phases the card records: checking/shrinking the images, and training (fastai's
vision_learner + fine_tune). `--phone` saves every image at 4032×3024 (12 MP, a phone camera's
size) so that decoding and shrinking cost what they cost with real phone photos.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.trainingdata import make_folders  # noqa: E402

LABELS = ("coffee", "cat", "rocket")
PHONE_SIZE = (4032, 3024)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def to_phone_size(root: Path) -> None:
    """Rewrite every JPEG under `root` at 12 MP, as a phone camera saves them."""
    from PIL import Image

    for path in sorted(root.rglob("*.jpg")):
        with Image.open(path) as image:
            portrait = image.height > image.width
            size = PHONE_SIZE[::-1] if portrait else PHONE_SIZE
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
                path, "JPEG", quality=90
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-label", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--phone", action="store_true", help="12 MP JPEGs, as phones take them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="verdict-fit-bench-") as tmp:
        root = Path(tmp)
        images = root / "photos"
        make_folders(images, dict.fromkeys(LABELS, args.per_label), seed=11)
        if args.phone:
            to_phone_size(images)
        total_bytes = sum(p.stat().st_size for p in images.rglob("*.jpg"))
        data_dir = root / "data"
        env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "OMP_NUM_THREADS")}

        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from pathlib import Path; from model.registry import Registry; "
                "from training.fit import ensure_default_registered; "
                f"ensure_default_registered(Registry(Path({str(data_dir / 'models')!r})), True)",
            ],
            cwd=REPO,
            env=env,
            check=True,
        )
        default_s = time.perf_counter() - started

        command = [
            sys.executable,
            "-m",
            "training",
            "fit",
            str(images),
            "--data-dir",
            str(data_dir),
            "--epochs",
            str(args.epochs),
        ]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"fit failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr}")
        cards = sorted((data_dir / "models").glob("v*/card.json"))
        card = json.loads(cards[-1].read_text())
        params = card["params"]

    import torch

    images_n = card["training_images"]
    epochs = params["freeze_epochs"] + params["epochs"]
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, no GPU used")
    print(f"torch {torch.__version__}, fastai {params['fastai']}, {params['threads']} thread(s)")
    print(
        f"images: {images_n} ({args.per_label} per label × {len(LABELS)}), "
        f"{'12 MP phone-size' if args.phone else 'about 0.1 MP'} JPEGs, "
        f"{total_bytes / 1e6:.0f} MB"
    )
    print(f"default learner export + registration (once per DATA_DIR): {default_s:.1f} s")
    print(
        f"fit: {wall_s:.1f} s wall for {epochs} epochs "
        f"({params['freeze_epochs']} frozen + {params['epochs']}), "
        f"{card['metrics']['train_images']} train / {card['metrics']['valid_images']} valid"
    )
    print(
        f"  checking + shrinking the images: {params['prepare_seconds']:.1f} s; "
        f"training: {params['train_seconds']:.1f} s "
        f"({params['train_seconds'] / epochs:.1f} s per epoch, "
        f"{1000 * params['train_seconds'] / epochs / images_n:.0f} ms per image per epoch)"
    )
    print(f"  validation accuracy {card['metrics']['accuracy']:.1%}")


if __name__ == "__main__":
    main()
