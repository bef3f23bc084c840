"""/retrain: fit a new model version in a separate process, its progress in one message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field

from telegram import InlineKeyboardMarkup, Update
from telegram.error import TelegramError

from bot import keyboards, labeltexts
from bot.context import Ctx, Services
from bot.edits import not_modified_ok
from bot.versions import metrics_text
from model.serving import fastai_available

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 3.0  # Telegram allows about one edit a second per chat; stay well below
# One row of fastai's epoch table as `fit` prints it: epoch, train_loss, valid_loss, metrics…
EPOCH_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+|nan)\s+([\d.]+|nan)\s+([\d.]+)\s+([\d.]+)\s")
PLAN_LINE = re.compile(r"^training: (\d+) epochs? in all")
SHUTDOWN_TEXT = (
    "Retraining cancelled: the bot was shut down before it finished, and nothing was "
    "registered. Run /retrain again once the bot is back."
)


@dataclass
class Retrain:
    """A running `python -m training fit`, and what the admin sees of it."""

    process: asyncio.subprocess.Process
    chat_id: int
    message_id: int
    started: float = field(default_factory=time.monotonic)
    epoch: int = 0
    epochs: int = 0
    loss: str = "–"
    accuracy: str = "–"
    lines: list[str] = field(default_factory=list)
    cancelled: bool = False
    shutdown: bool = False  # cancelled because the bot is stopping

    def stop(self) -> None:
        """Ask the trainer, and whatever it started, to stop (SIGTERM to its process group)."""
        _signal_group(self.process, signal.SIGTERM)

    def progress_text(self) -> str:
        """A progress bar and the latest numbers."""
        total = max(self.epochs, 1)
        done = min(self.epoch, total)
        bar = "█" * round(10 * done / total) + "░" * (10 - round(10 * done / total))
        elapsed = time.monotonic() - self.started
        return (
            f"🏋️ Retraining… {bar} epoch {done}/{self.epochs or '?'}\n"
            f"loss {self.loss} · accuracy {self.accuracy} · {elapsed:.0f} s\n"
            "The bot keeps answering photos meanwhile. /retrain cancel stops it."
        )


async def on_retrain(update: Update, context: Ctx) -> None:
    """/retrain: fit a new version in a separate process, reporting progress in one message."""
    message = update.effective_message
    if message is None:
        return
    slot = context.services.retrain
    running = slot.running
    args = context.args or []
    if args and args[0] == "cancel":
        if running is None:
            await message.reply_text("No retraining is running.")
            return
        running.cancelled = True
        running.stop()
        await message.reply_text("Stopping the retraining…")
        return
    if running is not None:
        await message.reply_text("A retraining is already running:\n" + running.progress_text())
        return
    settings = context.services.settings
    if not fastai_available():
        await message.reply_text(
            "Retraining needs the full image (fastai and torch); this one serves compiled "
            "versions only. Retrain on a machine with the full image, then move the new "
            "version here: `python -m training bundle VERSION FILE` there, "
            "`python -m training import FILE` here."
        )
        return
    if settings.training_data_dir is None:
        await message.reply_text(
            "Set TRAINING_DATA_DIR to a folder with one sub-folder of images per label, then "
            "restart the bot and try again."
        )
        return
    command = [
        sys.executable,
        "-m",
        "training",
        "fit",
        str(settings.training_data_dir),
        "--with-feedback",
        "--reviewed-only",
        "--no-activate",
        "--data-dir",
        str(settings.data_dir),
        *settings.retrain_args,
    ]
    status = await message.reply_text("🏋️ Starting the retraining…")
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_training_env(),
        # Its own process group: stopping it stops its data loader processes too.
        start_new_session=True,
    )
    retrain = Retrain(process, status.chat_id, status.message_id)
    slot.running = retrain
    context.application.create_task(_follow(retrain, context))


def _training_env() -> dict[str, str]:
    # One thread for training leaves the other cores to the workers answering photos.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


async def _follow(retrain: Retrain, context: Ctx) -> None:
    """Read the trainer's output, edit the progress message, and report the result."""
    assert retrain.process.stdout is not None
    last_edit = 0.0
    shown = ""
    try:
        async for raw in retrain.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            for part in line.split("\r"):
                _parse(retrain, part)
            now = time.monotonic()
            text = retrain.progress_text()
            if now - last_edit >= PROGRESS_EVERY_S and text != shown:
                last_edit, shown = now, text
                await _edit(context, retrain, text)
        code = await retrain.process.wait()
    finally:
        context.services.retrain.running = None
    if retrain.shutdown:
        await _edit(context, retrain, SHUTDOWN_TEXT)
        return
    if retrain.cancelled:
        await _edit(context, retrain, "Retraining cancelled; nothing was registered.")
        return
    if code != 0:
        tail = "\n".join(line for line in retrain.lines[-8:] if line.strip())
        await _edit(context, retrain, f"Retraining failed (exit {code}):\n{tail}"[:4000])
        return
    await _report(context, retrain)


async def cancel_retraining_for_shutdown(services: Services, grace_s: float = 10.0) -> None:
    """The bot is stopping: stop a running retraining (killed after `grace_s`), whose follower
    then says so in the admin's progress message. The stop waits for that, not for the run."""
    retrain = services.retrain.running
    if retrain is None:
        return
    logger.warning("stopping: cancelling the retraining in progress (pid %d)", retrain.process.pid)
    retrain.cancelled = retrain.shutdown = True
    retrain.stop()
    try:
        await asyncio.wait_for(retrain.process.wait(), grace_s)
    except TimeoutError:
        logger.warning("the retraining did not stop within %.0f s: killing it", grace_s)
        _signal_group(retrain.process, signal.SIGKILL)
        await retrain.process.wait()


def _signal_group(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _parse(retrain: Retrain, line: str) -> None:
    if not line.strip():
        return
    retrain.lines.append(line)
    del retrain.lines[:-50]
    plan = PLAN_LINE.match(line)
    if plan:
        retrain.epochs = int(plan.group(1))
        return
    row = EPOCH_ROW.match(line)
    if row:
        retrain.epoch += 1
        retrain.loss = row.group(3)
        retrain.accuracy = f"{float(row.group(4)):.1%}" if float(row.group(4)) <= 1 else "–"


async def _report(context: Ctx, retrain: Retrain) -> None:
    reg = context.services.registry
    versions = await asyncio.to_thread(reg.versions)
    active = await asyncio.to_thread(reg.active)
    if not versions:
        await _edit(context, retrain, "Retraining finished but registered no version.")
        return
    new = versions[-1]
    text = (
        f"✅ Retraining finished: {new.version}\n"
        f"new: {metrics_text(new.metrics)}\n"
        f"active ({active.version if active else 'none'}): "
        f"{metrics_text(active.metrics if active else None)}"
    )
    # The evidence for [Use it]: old vs new on held-out disputed photos; the new labels' fate.
    evidence = labeltexts.retrain_lines(new.metrics, new.params)
    if evidence:
        text = f"{text}\n\n{evidence}"[:4000]
    markup = keyboards.retrained_keyboard(new.version)
    await _edit(context, retrain, text, markup)


async def _edit(
    context: Ctx, retrain: Retrain, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    try:
        with not_modified_ok():
            await context.bot.edit_message_text(
                text, chat_id=retrain.chat_id, message_id=retrain.message_id, reply_markup=markup
            )
    except TelegramError:
        logger.warning("could not update the retraining message", exc_info=True)
