"""Getting the bot ready to serve: which model, how many workers, and a usable data folder.

`bot/__main__.py` calls these in order at start; each is a plain function so tests call them
directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.config import LOOPBACK_HOSTS, Settings
from bot.context import ImageClassifier
from model.datadir import models_dir
from model.default import DEFAULT_MODEL_FILE
from model.feedback.schema import IMAGES_FOLDER, database_path, feedback_dir
from model.pool import Classifier, ModelLoadError, PoolConfig
from model.registry import ModelCard, Registry, RegistryError
from model.serving import FULL_IMAGE_HINT, NeedsFullInstall, Served, fastai_available, served_form
from model.worker import WorkerConfig

if TYPE_CHECKING:
    from bot.remote import RemoteClassifier

logger = logging.getLogger("bot")


def choose_model(settings: Settings, registry: Registry) -> Served | None:
    """What the workers serve at start: MODEL_PATH when set (on fastai); else the registry's
    active version in the form INFERENCE_BACKEND picks (model/serving.py, every file's sha256
    checked); else None, which makes the workers export the bundled default
    (`serve_exported_default` then registers it).

    An export of the default lying beside the versions (left by an earlier release, or by a
    start that stopped before registering it) is registered now when no version is active, and
    removed when the default is registered already: the data folder holds each model once.
    `RegistryError` (`NeedsFullInstall`) when this install cannot serve what is there.
    """
    can_fastai = fastai_available()
    if settings.model_path is not None:
        if not can_fastai:
            raise NeedsFullInstall(
                "MODEL_PATH names a fastai learner, which needs the full install; "
                + FULL_IMAGE_HINT
            )
        logger.info(
            "using MODEL_PATH %s (the registry's active version is ignored)", settings.model_path
        )
        return Served(settings.model_path, None, None)
    seed_models(registry)
    active = registry.active()
    export = registry.models_dir / DEFAULT_MODEL_FILE
    if export.is_file():
        default = registry.default()
        if default is not None:
            export.unlink()
            logger.info("removed %s: the bundled default is version %s", export, default.version)
        elif active is None:
            active = adopt_default_export(registry)
    if active is None and settings.inference_url is not None and can_fastai:
        # No local workers export the default on a cluster: make it here, in a child process
        # (torch never enters the bot's), registered, compiled and active.
        make_default_version(settings)
        active = registry.active()
    if active is None:
        if not can_fastai:
            raise NeedsFullInstall(
                "no model version is registered, and this install cannot make the bundled "
                f"default (no fastai); {FULL_IMAGE_HINT}"
            )
        return None
    served = form_to_serve(settings, registry, active)
    logger.info(
        "serving %s on %s%s",
        active.version,
        served.backend,
        f" ({served.note})" if served.note else "",
    )
    return served


def make_default_version(settings: Settings) -> None:
    """`python -m training compile default` into the data folder (export, register, compile)."""
    logger.info(
        "first start on a cluster: making the bundled default model version in %s (about a "
        "minute, once per data folder)",
        settings.models_dir,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "compile",
            "default",
            "--data-dir",
            str(settings.data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RegistryError(
            "could not make the bundled default model version: "
            + (result.stderr.strip().splitlines() or ["no output"])[-1]
        )


def form_to_serve(settings: Settings, registry: Registry, card: ModelCard) -> Served:
    """`served_form` for INFERENCE_BACKEND, as every switch picks it (start, /use, [Use it],
    the background compile, `training use` on a cluster). On a cluster the replicas run the
    model: whether they can run fastai is theirs to say (a swap they cannot load is refused
    with their reason)."""
    can_fastai = True if settings.inference_url is not None else None
    return served_form(registry, card, settings.inference_backend, can_fastai=can_fastai)


SEED_ENV = "VERDICT_SEED_MODELS"


def seed_models(registry: Registry) -> None:
    """In an image that carries a compiled version (the slim image: $VERDICT_SEED_MODELS),
    register and activate it when the registry is still empty."""
    seed = os.environ.get(SEED_ENV)
    if not seed or registry.versions():
        return
    from model.seed import seed_registry

    card = seed_registry(registry, Path(seed))
    if card is not None:
        logger.info("registered %s from the image's %s as the active version", card.version, seed)


def adopt_default_export(registry: Registry) -> ModelCard:
    """Register the exported bundled default (moved into the registry, not copied); its card.

    It becomes the active version when it is the first one. The registry holds versions but
    none is active only after `training import --no-activate` into an empty data folder: the
    default is then served without being activated, and the log says how to switch.
    """
    others = registry.versions()
    card = registry.register_default(registry.models_dir / DEFAULT_MODEL_FILE)
    if not others:
        registry.activate(card)
        logger.info("registered the bundled default model as %s, the active version", card.version)
    else:
        logger.warning(
            "no model version is active: serving the bundled default model (%s). Not active: "
            "%s; switch with /use VERSION (admins, in the chat) or "
            "`python -m training use VERSION`",
            card.version,
            ", ".join(other.version for other in others),
        )
    return card


async def serve_exported_default(classifier: ImageClassifier, registry: Registry) -> None:
    """The workers exported the bundled default: register it, then serve the registered file,
    so that a replaced worker loads that file instead of exporting the model again."""
    card = await asyncio.to_thread(adopt_default_export, registry)
    checked = await asyncio.to_thread(registry.checked_model, card)
    try:
        await classifier.swap(checked.path, checked.sha256)
    except ModelLoadError as exc:
        logger.error("version %s did not load (%s); serving the export", card.version, exc)


def build_classifier(settings: Settings, served: Served | None) -> Classifier | RemoteClassifier:
    """The worker pool, sized for this machine unless the settings say otherwise; with
    INFERENCE_URL, the Ray Serve cluster's client instead (no local workers)."""
    if settings.inference_url is not None:
        return build_remote(settings, served)
    gpus = count_gpus() if settings.inference_device in ("auto", "cuda") else 0
    if settings.inference_device == "cuda" and not gpus:
        logger.warning("INFERENCE_DEVICE=cuda but no NVIDIA GPU is visible; using the CPU")
    cpus = available_cpus()
    overrides = {
        name: value
        for name, value in (
            ("workers", settings.workers),
            ("max_batch", settings.max_batch),
            ("max_wait_ms", settings.max_wait_ms),
            ("queue_size", settings.queue_size),
        )
        if value is not None
    }
    pool = PoolConfig.for_machine(
        max(1, cpus // settings.inference_threads),
        gpus,
        timeout_s=settings.classify_timeout,
        **overrides,
    )
    worker = WorkerConfig(
        models_dir=settings.models_dir,
        model_path=served.path if served is not None else None,
        model_sha256=served.sha256 if served is not None else None,
        compiled=served.compiled if served is not None else None,
        threads=settings.inference_threads,
        max_pixels=settings.max_image_pixels,
        top_k=settings.top_k,
        device="cuda" if gpus else "cpu",
        log_level="DEBUG" if settings.log_level == "DEBUG" else "WARNING",
    )
    logger.info(
        "pool: %d worker(s) × %d thread(s) on %s, batches of up to %d",
        pool.workers,
        worker.threads,
        worker.device,
        pool.max_batch,
    )
    return Classifier(worker, pool)


def build_remote(settings: Settings, served: Served | None) -> RemoteClassifier:
    """The client of the Ray Serve cluster at INFERENCE_URL, delivering `served` to it."""
    from bot.remote import RemoteClassifier

    if served is None:
        raise RegistryError("no model version to deliver to the inference cluster")
    dashboard = settings.dashboard_url
    assert settings.inference_url is not None and dashboard is not None
    models_url = settings.models_url
    host = urlsplit(models_url).hostname or ""
    if settings.http_host in LOOPBACK_HOSTS and host not in LOOPBACK_HOSTS:
        logger.warning(
            "HTTP_HOST is %s: replicas on other machines cannot fetch models from %s; set "
            "HTTP_HOST=0.0.0.0 (and MODEL_TOKEN)",
            settings.http_host,
            models_url,
        )
    logger.info(
        "classifying on the Ray Serve cluster at %s (dashboard %s); replicas fetch models "
        "from %s/models/",
        settings.inference_url,
        dashboard,
        models_url,
    )
    return RemoteClassifier(
        settings.inference_url,
        dashboard,
        models_url,
        initial=(served.path, served.sha256, served.compiled),
        timeout_s=settings.classify_timeout,
        queue_size=settings.queue_size or REMOTE_QUEUE_SIZE,
    )


REMOTE_QUEUE_SIZE = 256  # requests in flight to the cluster at most (more: "busy")


def count_gpus() -> int:
    """NVIDIA GPUs the driver shows, without importing torch in the bot process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's `--cpus`, compose's `cpus:`) rounded down; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return cpus


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup and its ancestors; None when
    there is none. Reads cgroup v2's `cpu.max` and v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
    """
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2
            if (cgroup_root / "cgroup.controllers").is_file():
                for folder in _cgroup_folders(cgroup_root, path):
                    quotas.extend(_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1, mounted as cpu or cpu,cpuacct
            for mount in (cgroup_root / "cpu", cgroup_root / controllers):
                if mount.is_dir():
                    for folder in _cgroup_folders(mount, path):
                        quotas.extend(_v1_quota(folder))
                    break
    return min(quotas, default=None)


def _cgroup_folders(mount: Path, path: str) -> Iterator[Path]:
    """The folder of the cgroup at `path` under `mount`, then its ancestors up to `mount`.
    Inside a container the mount is often the container's own cgroup, which /proc still
    names by its host path: then only the mount itself is read."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        folder = mount
    while True:
        yield folder
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, _, period = cpu_max.read_text(encoding="utf-8").partition(" ")
        if quota.strip() == "max":
            return []
        return [int(quota) / int(period)]
    except (OSError, ValueError, ZeroDivisionError):
        return []


def _v1_quota(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def data_dir_problem(data_dir: Path) -> str | None:
    """Why this process could not write under DATA_DIR, with what to do; None when it can.

    The usual cause is a host folder mounted into the container (`./data:/data`) that belongs
    to another user than the image's. Checks without creating anything.
    """
    wanted = [
        data_dir,
        feedback_dir(data_dir),
        database_path(data_dir),
        feedback_dir(data_dir) / IMAGES_FOLDER,
        models_dir(data_dir),
    ]
    present = [path for path in wanted if path.exists()]
    if not present:  # nothing yet: it is created in the nearest folder that exists
        present = [next(parent for parent in data_dir.absolute().parents if parent.exists())]
    for path in present:
        mode = os.W_OK | (os.X_OK if path.is_dir() else os.R_OK)
        if not os.access(path, mode):
            uid, gid = os.getuid(), os.getgid()
            return (
                f"DATA_DIR {data_dir} is not writable: this process (uid {uid}, gid {gid}) "
                f"cannot write {path}.\nA folder mounted from the host (e.g. ./data:/data) "
                f"must belong to that user: run `sudo chown -R {uid}:{gid} ./data` on the "
                "host, or use the named volume of docker-compose.yml (verdict-data)."
            )
    return None
