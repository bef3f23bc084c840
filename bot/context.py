"""The services handlers use, and the typed context that hands them over (no globals)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from telegram.ext import Application, CallbackContext, ExtBot

from bot.config import Settings
from bot.metrics import Metrics
from model.feedback import FeedbackLog
from model.pool import PoolStats
from model.types import Prediction


class ImageClassifier(Protocol):
    """What the bot needs from the inference side: bytes in, a small result out."""

    model_name: str

    async def classify(self, image: bytes) -> Prediction:
        """Top-k labels for the image, or an `ImageRejected` / `ClassifierUnavailable`."""
        ...

    def stats(self) -> PoolStats:
        """Workers, queue and counters, for /readyz, /metrics and /stats."""
        ...

    def labels_for(self, model: str) -> Sequence[str] | None:
        """Every label `model` knows, in its output order, when known."""
        ...


@dataclass
class Tunables:
    """Settings admins change while the bot runs (persisted in the feedback log)."""

    confidence_threshold: float


@dataclass(frozen=True)
class Services:
    """Everything long-lived the handlers use; put into `bot_data` once."""

    settings: Settings
    classifier: ImageClassifier
    feedback: FeedbackLog
    metrics: Metrics
    tunables: Tunables
    started: float = field(default_factory=time.time)

    @classmethod
    def create(
        cls,
        settings: Settings,
        classifier: ImageClassifier,
        feedback: FeedbackLog,
        metrics: Metrics,
    ) -> Services:
        """Services with the tunables taken from the settings."""
        return cls(
            settings, classifier, feedback, metrics, Tunables(settings.confidence_threshold)
        )


SERVICES_KEY = "services"


class Ctx(CallbackContext[ExtBot[Any], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """Callback context with typed access to the `Services`."""

    @property
    def services(self) -> Services:
        """The application's services."""
        services = self.bot_data[SERVICES_KEY]
        assert isinstance(services, Services)
        return services


BotApp = Application[ExtBot[Any], Ctx, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]
