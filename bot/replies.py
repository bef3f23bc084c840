"""The texts the bot sends: pure functions, so tests can call them directly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from telegram import BotCommand

from model.feedback import VerdictKind
from model.types import (
    CorruptImage,
    EmptyFile,
    ImageRejected,
    LabelScore,
    NotAnImage,
    TooManyPixels,
    UnsupportedImage,
)

READABLE = "JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF"


def percent(probability: float) -> str:
    """A probability as a whole percentage, never rounding a small one down to '0%'."""
    value = round(probability * 100)
    if value == 0 and probability > 0:
        return "<1%"
    if value == 100 and probability < 1:
        return ">99%"
    return f"{value}%"


class Scored(Protocol):
    """A prediction as it is answered (`Prediction`) or as it is logged (`PredictionRecord`)."""

    @property
    def scores(self) -> Sequence[LabelScore]:
        """The top-k labels, best first."""
        ...


def prediction_text(prediction: Scored, threshold: float) -> str:
    """`espresso — 95%`, or the runner-ups too when the top label is below `threshold`."""
    top = prediction.scores[0]
    if top.probability >= threshold:
        return f"{top.label} — {percent(top.probability)}"
    candidates = ", ".join(_candidate(score) for score in prediction.scores)
    return f"Not sure: {candidates}"


def _candidate(score: LabelScore) -> str:
    return f"{score.label} {percent(score.probability)}"


def rejection_text(error: ImageRejected) -> str:
    """A polite explanation of why an image could not be classified."""
    if isinstance(error, EmptyFile):
        return "That file is empty (0 bytes), so there is nothing to look at. Please send a photo."
    if isinstance(error, TooManyPixels):
        limit = f"{error.limit / 1_000_000:g} megapixels"
        if error.width and error.height:
            size = (
                f"{error.width}×{error.height} pixels ({error.width * error.height / 1e6:,.0f} MP)"
            )
            return (
                f"That image is too large to open safely: {size}, and I accept up to {limit}. "
                "Please send a smaller version, or send it as a photo."
            )
        return f"That image is larger than the {limit} I accept. Please send a smaller version."
    if isinstance(error, UnsupportedImage):
        return (
            f"I can't read {error.kind} images yet. Send it as a photo instead (Telegram "
            f"converts it), or as a {READABLE} file."
        )
    if isinstance(error, NotAnImage):
        looks_like = f" (it looks like {error.kind})" if error.kind else ""
        return (
            f"That file is not an image I can read{looks_like}. "
            f"Please send a photo, or an image file: {READABLE}."
        )
    if isinstance(error, CorruptImage):
        return (
            "I couldn't read that image: the file seems damaged or incomplete (perhaps the "
            "upload was cut short). Please send it again."
        )
    return "I couldn't read that image. Please send another photo."


def too_big_text(size_bytes: int, limit_bytes: int) -> str:
    """Refusal for a file above the Bot API's download limit."""
    return (
        f"That file is {size_bytes / 1024 / 1024:.1f} MB, and Telegram lets bots download files "
        f"of at most {limit_bytes / 1024 / 1024:g} MB. Please send a smaller file, or send the "
        "picture as a photo (Telegram compresses it)."
    )


BUSY = "I'm busy with a lot of photos right now. Please try again in a moment."

MODEL_FAILED = (
    "Sorry, I couldn't classify this image: it made the model fail. Please try another photo."
)

UNAVAILABLE = "Sorry, the classifier is not available right now. Please try again in a minute."

SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side. Please try again."

FETCH_FAILED = "I couldn't fetch this photo from Telegram. Please send it again."

NOT_KEPT = "(I couldn't keep this answer on record right now, so it has no buttons to judge it.)"
NOT_KEPT_VERDICT = "Sorry, I couldn't keep your verdict right now. Please try again later."


def album_others_text(answered: int, sent: int) -> str:
    """The footer of an album reply when some of its photos got a reply of their own."""
    others = sent - answered
    return (
        f"Here are {answered} of the {sent} photos; "
        f"{'the other one has' if others == 1 else f'the other {others} have'} a reply of "
        f"{'its' if others == 1 else 'their'} own."
    )


def not_keeping_text(reason: str) -> str:
    """What admins are told, once, when the feedback log stops keeping data."""
    return (
        f"⚠️ I can't keep data right now: {reason}.\n"
        "I keep answering photos, without ✅ Right / ❌ Wrong buttons, and I'll tell you when I "
        "can keep data again."
    )


KEEPING_AGAIN = "✅ I can keep data again: answers have their Right/Wrong buttons back."


def inbox_failing_text(reason: str) -> str:
    """What admins are told, once, when the inbox stops keeping updates."""
    return (
        f"⚠️ I can't keep incoming updates on disk right now: {reason}.\n"
        "I keep answering, but a photo or a tap in flight when I restart or crash would be "
        "lost. I'll tell you when I can keep them again."
    )


INBOX_WORKING_AGAIN = "✅ I can keep incoming updates on disk again: a crash loses none."

HINT = (
    "I only look at still images. Send me a photo (or an image file) and I'll tell you what "
    "I see. /help explains more."
)

UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."


def help_text(
    labels_hint: str, threshold: float, retention_days: float, keep_uncertain: bool
) -> str:
    """What the bot does, what it keeps and for how long, and how to use it."""
    uncertain = (
        f"• photos I was less than {percent(threshold)} sure about, so my operator can review "
        "them;\n"
        if keep_uncertain
        else ""
    )
    return (
        "Send me a photo and I'll reply with what I think it shows and how confident I am, "
        f"for example “espresso — 95%”. {labels_hint}\n\n"
        "How to use me:\n"
        "• Send a photo, or an image file (JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP, TIFF; up to "
        "20 MB).\n"
        f"• When I'm less than {percent(threshold)} sure, I list my best guesses instead.\n"
        "• Tap ✅ Right or ❌ Wrong under an answer. After Wrong, pick or type the right label: "
        "your corrections train the next version of the model.\n\n"
        "What I keep:\n"
        "• for every answer: who asked, which photo (Telegram's file id), what I said and your "
        "verdict. Answers nobody disputed are deleted after "
        f"{retention_days:g} days;\n"
        "• the photo itself, only when you tap ❌ Wrong, and\n"
        f"{uncertain}"
        "• disputed photos and your corrections until you delete them.\n"
        "/forget deletes everything I keep about you, copies in my operator's training-data "
        f"exports included (those are deleted after {retention_days:g} days in any case).\n\n"
        "Commands: /help — this message; /forget — delete your data; /cancel — stop typing a "
        "label."
    )


def start_text(first_name: str | None, help_body: str) -> str:
    """The greeting for /start: a hello, then the help text."""
    greeting = f"Hi {first_name}! " if first_name else "Hi! "
    return greeting + help_body


def labels_hint(labels: Sequence[str] | None) -> str:
    """One sentence on what the model knows."""
    if not labels:
        return "I use a model trained by my operator."
    if len(labels) == 1000 and "espresso" in labels:
        return "I know the 1000 everyday things of ImageNet (animals, food, objects, vehicles)."
    if len(labels) <= 12:
        return f"I tell these apart: {', '.join(labels)}."
    return f"I know {len(labels)} labels, for example {', '.join(labels[:5])}."


# ---------------------------------------------------------------------------- verdicts


def verdict_footer(kind: VerdictKind, label: str | None, image_kept: bool = True) -> str:
    """The line added under a prediction once its verdict is recorded.

    `image_kept`: whether the photo is kept with it; a correction without its photo is
    recorded, but trains nothing.
    """
    if kind == VerdictKind.RIGHT:
        return "✅ Recorded as right. Thank you!"
    if kind == VerdictKind.WRONG:
        if not image_kept:
            return (
                f"❌ Corrected to: {label}. Thank you! I couldn't fetch the photo again, so the "
                "correction is recorded without it and won't train the next model."
            )
        return f"❌ Corrected to: {label}. Thank you, this helps train the next model."
    return "🤷 Recorded as not sure. Thank you!"


def verdict_mark(kind: VerdictKind, label: str | None) -> str:
    """The short status after one line of an album reply."""
    if kind == VerdictKind.RIGHT:
        return "✅"
    if kind == VerdictKind.WRONG:
        return f"❌ → {label}"
    return "🤷"


def with_footer(prediction_text: str, footer: str) -> str:
    """A prediction message with a status line under it."""
    return f"{prediction_text}\n\n{footer}"


ASK_LABEL = "❌ What is it? Pick the right label, or tap ✏️ Something else… to type it."
BROWSE_LABELS = "📚 Pick the right label (page {page} of {pages}):"
TYPE_LABEL = "✏️ Type the right label as your next message (or /cancel)."
ONLY_SENDER = "Only the person who sent the photo can correct this."
EXPIRED = "This answer is no longer on record, so it can't be judged any more."
NOT_THIS_MESSAGE = "This button doesn't belong to this message."
UNKNOWN_BUTTON = "This button no longer works."
ALREADY = "Already recorded."
NOTHING_TO_CANCEL = "There's nothing to cancel."
CANCELLED = "OK, I'm no longer waiting for a label."


def forget_prompt(total: int) -> str:
    """The /forget confirmation question."""
    if total == 0:
        return "I keep nothing about you right now: no answers, verdicts or photos."
    return (
        f"This deletes everything I keep about you: {total} item{'s' if total != 1 else ''} "
        "(answers, verdicts and kept photos). It can't be undone. Delete?"
    )


def forgotten_text(predictions: int, verdicts: int, images: int) -> str:
    """What /forget removed."""
    total = predictions + verdicts + images
    return (
        f"Done: deleted {total} item{'s' if total != 1 else ''} "
        f"({predictions} answers, {verdicts} verdicts, {images} photos)."
    )


FORGET_KEPT = "OK, nothing was deleted."


# ---------------------------------------------------------------------------- admins


def admin_help(commands: Sequence[BotCommand]) -> str:
    """The admin commands, added to /help for admins only."""
    return "Admin commands:\n" + "\n".join(
        f"/{command.command} — {command.description}" for command in commands
    )


ADMINS_ONLY = "Sorry, this command is for the bot's admins."
NOT_ALLOWED = (
    "Sorry, this bot is private: its operator has not given you access. "
    "I won't answer your messages."
)
