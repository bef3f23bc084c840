"""Reading the machine and a process tree from /proc (stdlib only: imported by measured
processes too)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def describe_machine(packages: Sequence[str]) -> str:
    """The CPU, cores, memory and Python, and the installed versions of `packages`, for a
    benchmark's report (read without importing them)."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in packages)
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores available ({os.cpu_count()} online), "
        f"{memory:.0f} GiB RAM, no GPU; Python {sys.version.split()[0]}, {versions}"
    )


CLOCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command's name (state, ppid, ...); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads); 0 once it is gone."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK if fields else 0.0


def _mib(path: str, key: str) -> float:
    """The ``key:`` line's kB figure in a /proc file, in MiB; 0 once the process is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    return _mib(f"/proc/{pid}/status", "VmRSS")


def pss_mib(pid: int) -> float:
    """Its proportional share of the pages it maps (shared pages split among their users)."""
    return _mib(f"/proc/{pid}/smaps_rollup", "Pss")


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree
