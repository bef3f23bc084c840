"""Whether the feedback log keeps what the bot gives it, as admins and the log hear of it.

When writing fails (disk full, database locked, a database that had to be started anew), the
bot goes on answering photos without keeping them: their answers come without Right/Wrong
buttons. The failure is logged once and each admin is told once; when a write works again,
both hear that too.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from bot import replies
from bot.access import tell_admins

if TYPE_CHECKING:
    from bot.context import Ctx

logger = logging.getLogger(__name__)


class Keeping:
    """The state of the feedback log's writes; one lives in `Services`."""

    def __init__(self) -> None:
        self.failing_since: float | None = None  # time.time() of the first failed write
        self.failures = 0  # failed writes since then

    @property
    def failing(self) -> bool:
        """Whether the last write failed."""
        return self.failing_since is not None

    def failed(self, context: Ctx, what: str, exc: BaseException) -> None:
        """A write failed: log it and tell the admins, the first time only."""
        self.failures += 1
        if self.failing_since is not None:
            logger.debug("writes still failing (%s): %s", what, exc)
            return
        self.failing_since = time.time()
        logger.error(
            "cannot keep data (%s): %s; answering photos without keeping them until a write "
            "works again",
            what,
            exc,
            exc_info=exc,
        )
        text = replies.not_keeping_text(str(exc) or type(exc).__name__)
        context.application.create_task(
            tell_admins(context.bot, context.services.settings.admin_ids, text)
        )

    def kept(self, context: Ctx) -> None:
        """A write worked: if writes were failing, log and tell the admins that they work."""
        if self.failing_since is None:
            return
        failures, since = self.failures, self.failing_since
        self.failing_since, self.failures = None, 0
        logger.warning(
            "keeping data again, after %d failed write(s) over %.0f s",
            failures,
            time.time() - since,
        )
        context.application.create_task(
            tell_admins(context.bot, context.services.settings.admin_ids, replies.KEEPING_AGAIN)
        )
