"""Compiling the active version when it was never compiled, then serving the compiled form.

A version registered by `training` is compiled there, before it can be activated. Two kinds
are not: the bundled default, which the workers export at the first start, and versions
registered by an earlier release. For those the bot runs `python -m training compile VERSION`
in a child process once it is serving (the learner answers meanwhile), and swaps to the
compiled form when the compile verified one. It needs the full install (fastai, torch, onnx);
the child runs with one thread so that the workers keep their cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from bot.config import Settings
from bot.context import ImageClassifier
from bot.startup import form_to_serve
from model.registry import ModelCard, Registry, RegistryError
from model.serving import fastai_available
from model.types import ClassifierError

logger = logging.getLogger("bot")

OUTPUT_TAIL_CHARS = 800


def needs_compiling(settings: Settings, card: ModelCard | None) -> bool:
    """Whether to compile `card` now: it was never compiled, something other than fastai
    was asked for, MODEL_PATH is not set, and this install can compile."""
    return (
        card is not None
        and card.compiled is None
        and settings.model_path is None
        and settings.inference_backend != "fastai"
        and fastai_available()
        and _has_onnx_exporter()
    )


def _has_onnx_exporter() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


class BackgroundCompile:
    """One compile of the active version in a child process; `stop` ends it at shutdown."""

    def __init__(
        self, settings: Settings, registry: Registry, classifier: ImageClassifier
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._classifier = classifier
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()  # tests wait on it

    def start(self, version: str) -> None:
        """Compile `version` in the background, then serve its compiled form if it is still
        the active version."""
        self._task = asyncio.create_task(self._run(version), name=f"compile-{version}")

    async def _run(self, version: str) -> None:
        try:
            await self._compile_and_swap(version)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("compiling %s failed; the learner keeps serving", version)
        finally:
            self.finished.set()

    async def _compile_and_swap(self, version: str) -> None:
        logger.info(
            "compiling %s to ONNX in the background (the learner serves meanwhile)", version
        )
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "training",
            "compile",
            version,
            "--data-dir",
            str(self._settings.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: stopped with its children
        )
        output, _ = await self._process.communicate()
        code = self._process.returncode
        self._process = None
        if code != 0:
            tail = output.decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:].strip()
            logger.warning("compiling %s failed (exit %s): %s", version, code, tail)
            return
        try:
            card = await asyncio.to_thread(self._registry.get, version)
            active = await asyncio.to_thread(self._registry.active)
            if active is None or active.version != version:
                logger.info("compiled %s; it is no longer the active version", version)
                return
            served = await asyncio.to_thread(form_to_serve, self._settings, self._registry, card)
        except RegistryError as exc:
            logger.warning("compiled %s but cannot serve it: %s", version, exc)
            return
        if served.compiled is None:
            logger.info("%s stays on fastai: %s", version, served.note or "no compiled form")
            return
        try:
            name = await self._classifier.swap(served.path, served.sha256, served.compiled)
        except ClassifierError as exc:  # a load that failed; an unreachable cluster
            logger.warning(
                "the compiled form of %s did not load (%s); fastai serves", version, exc
            )
            return
        logger.info("now serving %s compiled (%s, %s)", version, served.backend, name)

    async def stop(self) -> None:
        """Stop the compile at shutdown: its process group is terminated, then killed."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
