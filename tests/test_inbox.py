"""The inbox's table and async front, without a bot: dedupe, done marks, replay, pruning."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from telegram import Bot, Update

from bot.inbox import Inbox
from bot.inboxstore import MAX_ATTEMPTS, InboxStore

BOT = Bot("123:inbox-tests")


def text_update(update_id: int) -> Update:
    payload = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_764_600_000,
            "chat": {"id": 42, "type": "private", "first_name": "Ada"},
            "from": {"id": 42, "is_bot": False, "first_name": "Ada"},
            "text": f"hello {update_id}",
        },
    }
    update = Update.de_json(payload, BOT)
    assert update is not None
    return update


def test_a_copy_sent_again_is_not_new_and_done_is_kept_apart(tmp_path: Path) -> None:
    store = InboxStore.open(tmp_path)
    assert store.receive([(1, "{}"), (2, "{}")]) == {1, 2}
    assert store.receive([(2, "{}"), (3, "{}")]) == {3}
    store.mark_done([2])
    pending, given_up = store.take_pending()
    assert [p.update_id for p in pending] == [1, 3] and given_up == []
    store.close()


def test_pruning_removes_old_done_updates_only(tmp_path: Path) -> None:
    store = InboxStore.open(tmp_path)
    store.receive([(1, "{}"), (2, "{}")])
    store.mark_done([1])
    assert store.prune(older_than_s=3600) == 0  # done just now: kept a while
    assert store.prune(older_than_s=-1) == 1  # done "long ago": removed
    assert store.pending_count() == 1  # never the one not done, however old
    assert store.prune(older_than_s=-1) == 0
    store.close()


def test_an_update_that_never_finishes_is_given_up_after_its_attempts(tmp_path: Path) -> None:
    store = InboxStore.open(tmp_path)
    store.receive([(7, "{}")])
    for _ in range(MAX_ATTEMPTS):
        pending, given_up = store.take_pending()
        assert [p.update_id for p in pending] == [7] and not given_up
    assert store.take_pending() == ([], [7])
    assert store.pending_count() == 0
    store.close()


def test_replay_puts_back_what_was_not_done_in_order_and_skips_the_copies(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        before = await Inbox.open(tmp_path)
        await before.receive([text_update(i) for i in (10, 11, 12)])
        await before.finished(text_update(11))
        await before.close()  # as if the process died here

        after = await Inbox.open(tmp_path)
        assert after.counts.pending == 2
        queue: asyncio.Queue[object] = asyncio.Queue()
        assert await after.replay(queue, BOT) == 2
        replayed = [queue.get_nowait() for _ in range(queue.qsize())]
        assert [u.update_id for u in replayed if isinstance(u, Update)] == [10, 12]
        assert isinstance(replayed[0], Update) and replayed[0].message is not None
        assert replayed[0].message.text == "hello 10"
        # Telegram sends 10..12 again (never confirmed): each copy is skipped once.
        await after.receive([text_update(i) for i in (10, 11, 12, 13)])
        assert [after.is_duplicate(i) for i in (10, 11, 12, 13)] == [True, True, True, False]
        assert not after.is_duplicate(10)
        await after.finished(text_update(10))
        await after.finished(text_update(12))
        assert after.counts.pending == 1  # 13
        await after.close()

    asyncio.run(scenario())


def test_a_disk_that_fails_keeps_nothing_and_hands_every_update_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox = await Inbox.open(tmp_path)
        conn = sqlite3.connect(tmp_path / "inbox" / "inbox.sqlite3")
        conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock: writes fail
        try:
            new = await inbox.receive_json([(5, "{}")])
        finally:
            conn.rollback()
            conn.close()
        assert new == {5} and inbox.counts.unkept == 1 and inbox.failing_since is not None
        assert await inbox.receive_json([(6, "{}")]) == {6}
        assert inbox.failing_since is None  # working again
        await inbox.close()

    asyncio.run(scenario())


def test_an_inbox_that_cannot_be_opened_leaves_the_bot_answering_and_tells_admins(
    tmp_path: Path,
) -> None:
    (tmp_path / "inbox").write_text("a file where the folder should be")
    told: list[tuple[int, str]] = []

    class FakeBot:
        async def send_message(self, chat_id: int, text: str) -> None:
            told.append((chat_id, text))

    async def scenario() -> None:
        try:
            await Inbox.open(tmp_path)
        except (OSError, sqlite3.Error) as exc:
            inbox = Inbox.unavailable(exc)
        else:
            raise AssertionError("the inbox opened where it could not")
        assert not inbox.enabled and inbox.failing_since is not None
        assert await inbox.receive_json([(1, "{}")]) == {1}  # handed on, not kept
        inbox.tell_admins_with(FakeBot(), frozenset({9, 8}))  # type: ignore[arg-type]
        inbox.tell_if_unavailable()
        inbox.tell_if_unavailable()  # once
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert [chat for chat, _ in told] == [8, 9]
    assert all("can't keep incoming updates" in text for _, text in told)


def test_an_update_is_done_as_soon_as_its_reply_is_out_and_counted_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox = await Inbox.open(tmp_path)
        update = text_update(20)
        assert update.message is not None
        await inbox.receive([update])
        inbox.started(update)
        await inbox.answered(update.message)  # the reply went out; the handler goes on
        assert inbox.counts.pending == 0 and inbox.counts.done == 1
        await inbox.close()  # killed before the handler returned
        again = await Inbox.open(tmp_path)
        queue: asyncio.Queue[object] = asyncio.Queue()
        assert await again.replay(queue, BOT) == 0  # not answered a second time
        await again.close()

        inbox = await Inbox.open(tmp_path)
        other = text_update(21)
        await inbox.receive([other])
        inbox.started(other)
        assert other.message is not None
        await inbox.answered(other.message)
        await inbox.finished(other)  # the handler returned: no second mark
        assert inbox.counts.done == 1
        await inbox.close()

    asyncio.run(scenario())
