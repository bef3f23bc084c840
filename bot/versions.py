"""Admin commands about model versions: /models, /use, and [Use it] after a /retrain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram import Message, Update
from telegram.error import TelegramError

from bot.callbacks import ModelButton
from bot.context import Ctx, Services
from bot.startup import form_to_serve
from model.compiled import describe
from model.pool import ModelLoadError
from model.registry import Registry, RegistryError
from model.types import ClassifierError, ClassifierUnavailable

logger = logging.getLogger(__name__)


def metrics_text(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "no metrics"
    parts = []
    if "accuracy" in metrics:
        parts.append(f"accuracy {float(metrics['accuracy']):.1%}")
    if "error_rate" in metrics:
        parts.append(f"error {float(metrics['error_rate']):.1%}")
    if "valid_images" in metrics:
        parts.append(f"{metrics['valid_images']} validation images")
    return ", ".join(parts) or "no metrics"


async def on_models(update: Update, context: Ctx) -> None:
    """/models: every registered version with its metrics; the active one marked."""
    message = update.effective_message
    if message is None:
        return
    reg = context.services.registry
    versions = await asyncio.to_thread(reg.versions)
    active = await asyncio.to_thread(reg.active)
    if not versions:
        await message.reply_text("No model versions are registered yet.")
        return
    lines = ["Model versions (newest last):"]
    for card in versions:
        mark = "▶️" if active is not None and card.version == active.version else "•"
        lines.append(
            f"{mark} {card.version} — {card.architecture}, {len(card.labels)} labels, "
            f"{metrics_text(card.metrics)}"
        )
        lines.extend(f"    {line}" for line in describe(card.compile_record))
    lines.append(f"\nServing now: {context.services.classifier.model_name}")
    lines.append("Switch with /use VERSION, or /use previous.")
    await message.reply_text("\n".join(lines))


async def on_use(update: Update, context: Ctx) -> None:
    """/use VERSION or /use previous: hot-swap the model, with no dropped photos."""
    message = update.effective_message
    if message is None:
        return
    args = context.args or []
    if not args:
        await message.reply_text("Which one? /use VERSION (see /models), or /use previous.")
        return
    await message.reply_text(await switch_to(context, args[0]))


async def switch_to(context: Ctx, wanted: str) -> str:
    """Swap the pool to a registered version and mark it active; the answer for the admin."""
    reg = context.services.registry
    try:
        if wanted == "previous":
            card = await asyncio.to_thread(reg.previous)
            if card is None:
                return "There is no previous version to go back to."
        else:
            card = await asyncio.to_thread(reg.get, wanted)
        served = await asyncio.to_thread(form_to_serve, context.services.settings, reg, card)
    except (RegistryError, KeyError) as exc:
        return f"Can't use {wanted!r}: {exc}"
    try:
        name = await context.services.classifier.swap(served.path, served.sha256, served.compiled)
    except ModelLoadError as exc:
        return f"{card.version} failed to load, so the current model keeps serving: {exc}"
    except ClassifierUnavailable as exc:  # the inference cluster cannot be reached
        return f"Can't switch to {card.version} now, the current model keeps serving: {exc}"
    try:
        await asyncio.to_thread(reg.activate, card.version)
    except RegistryError as exc:  # its files changed since they were checked a moment ago
        logger.error("%s serves but could not be marked active: %s", card.version, exc)
        return f"{card.version} serves now, but could not be marked active: {exc}"
    logger.info(
        "admin switched the model to %s (%s on %s%s)",
        card.version,
        name,
        served.backend,
        f"; {served.note}" if served.note else "",
    )
    return f"Now serving {card.version} on {served.backend} ({metrics_text(card.metrics)})."


async def on_model_button(update: Update, context: Ctx) -> None:
    """[Use it] / [Keep current] after a retraining."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    button = ModelButton.parse(query.data)
    await query.answer()
    if button is None:
        return
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(reply_markup=None)
    if button.version is None:
        answer = "Keeping the current model."
    else:
        answer = await switch_to(context, button.version)
    if isinstance(query.message, Message):
        await query.message.reply_text(answer)


async def follow_active_version(services: Services, interval_s: float = 5.0) -> None:
    """On a cluster, switch when the registry's active version changes under the bot
    (`python -m training use VERSION` on the data folder): the replicas serve what the
    registry says within `interval_s`. Edge-triggered: only a change of the active pointer
    acts, so /use (which swaps, then marks active) never races it."""
    registry, classifier = services.registry, services.classifier
    seen = await _active_version(registry)
    while True:
        await asyncio.sleep(interval_s)
        now = await _active_version(registry)
        if now is None or now == seen:
            continue
        seen = now
        if getattr(classifier, "version", None) == now:
            continue  # /use or [Use it] swapped to it already
        try:
            card = await asyncio.to_thread(registry.get, now)
            served = await asyncio.to_thread(form_to_serve, services.settings, registry, card)
            name = await classifier.swap(served.path, served.sha256, served.compiled)
        except (RegistryError, ClassifierError) as exc:
            logger.error("%s was made active, but the cluster cannot switch to it: %s", now, exc)
            continue
        logger.info("%s was made active (training use): now serving %s on the cluster", now, name)


async def _active_version(registry: Registry) -> str | None:
    try:
        card = await asyncio.to_thread(registry.active)
    except RegistryError:
        return None
    return card.version if card is not None else None
