"""Install torch and torchvision into the virtualenv `make` sets up: the CPU build when it fits.

PyPI's torch for Linux is the CUDA build (a virtualenv of about 6.5 GB). Without an NVIDIA GPU
that is dead weight, so where the PyTorch CPU index answers, its CPU wheels are installed
instead, at the versions of constraints.txt. With a GPU, or where that index cannot be reached
(a mirror or a proxy that lets only PyPI through), nothing is installed here and the project's
own install takes torch from PyPI. The index is probed with a short timeout and pip gets no
long retries, so a blocked index costs seconds, not minutes.

    python scripts/install_torch.py .venv/bin/pip     # TORCH_INDEX=URL picks the index
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"
PROBE_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 15


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU that its driver shows (or that nvidia-smi lists)."""
    try:
        if os.listdir("/proc/driver/nvidia/gpus"):
            return True
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def reachable(index: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether `index` answers for torch within `timeout_s` (DNS, connect and first byte)."""
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=timeout_s) as reply:
            return int(reply.status) == 200
    except (OSError, ValueError):
        return False


def choose_index(
    environ: Mapping[str, str],
    platform: str,
    gpu: Callable[[], bool],
    answers: Callable[[str], bool],
) -> tuple[str | None, str]:
    """The index to take torch from (None: leave it to PyPI) and why, for the log."""
    forced = environ.get("TORCH_INDEX", "").strip()
    if forced:
        return forced, "TORCH_INDEX is set"
    if platform != "linux":
        return None, "PyPI's torch is the CPU build on this platform"
    if gpu():
        return None, "an NVIDIA GPU is present: PyPI's CUDA build"
    if answers(CPU_INDEX):
        return CPU_INDEX, "no NVIDIA GPU: the CPU build (about 1 GB instead of 6)"
    return None, (
        f"no NVIDIA GPU, but {CPU_INDEX} is not reachable: PyPI's CUDA build (it runs on the "
        "CPU too, in a larger virtualenv)"
    )


def install(pip: str, index: str) -> bool:
    """`pip install` torch and torchvision from `index` at the pinned versions; success."""
    command = [
        pip,
        "install",
        "--quiet",
        "--constraint",
        str(CONSTRAINTS),
        "--index-url",
        index,
        "--timeout",
        str(PIP_TIMEOUT_S),
        "--retries",
        "1",
        "torch",
        "torchvision",
    ]
    return subprocess.run(command, check=False).returncode == 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: install_torch.py PIP", file=sys.stderr)
        return 2
    index, why = choose_index(os.environ, sys.platform, has_nvidia_gpu, reachable)
    if index is None:
        print(f"torch: from PyPI with the other dependencies ({why})", flush=True)
        return 0
    print(f"torch: from {index} ({why})", flush=True)
    if not install(argv[0], index):
        print(f"torch: {index} failed; PyPI's build comes with the other dependencies instead")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
