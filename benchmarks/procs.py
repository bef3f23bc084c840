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


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree
