"""New labels users type: normalising, grouping, admins' decisions, and what trains as what.

Unit tests of `model.feedback.labels`, the `label_decisions` table over a real feedback store,
the bot's pure texts and buttons for /labels, `training.data` resolving feedback labels (no
fit), and the `python -m training labels` CLI. The end-to-end test is tests/test_learning_loop.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import keyboards, labeltexts
from bot.callbacks import LabelAction, LabelButton
from model.feedback import (
    MAX_TYPED_LABEL_LENGTH,
    AnsweredPhoto,
    FeedbackStore,
    InvalidLabelDecision,
    LabelBook,
    LabelDecision,
    LabelDecisionKind,
    LabelProblem,
    Outcome,
    SqliteFeedbackLog,
    UnknownLabel,
    display_label,
    label_id,
    label_key,
    typed_label_problem,
)
from model.feedback.labels import Correction, are_close, class_name, group_proposals
from model.types import LabelScore, Prediction
from tests.conftest import FakeClock
from tests.trainingdata import make_folders, variant_bytes

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- normalising


def test_spellings_of_one_label_share_a_key() -> None:
    assert display_label("  Grass \t lawn\n") == "Grass lawn"
    assert display_label("ｇｒａｓｓ") == "grass"  # full-width forms (NFKC)
    assert display_label("ﬁsh") == "fish"  # the ligature
    keys = {label_key(s) for s in ("grass", "Grass ", " GRASS", "ｇｒａｓｓ", "grass")}
    assert keys == {"grass"}
    assert label_key("Straße") == label_key("STRASSE")  # full case folding, not lower()
    assert label_key("grass") != label_key("gras")
    assert len(label_id("grass")) == 12 and label_id("grass") == label_id(label_key("GRASS"))


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("", LabelProblem.EMPTY),
        (" \n\t ", LabelProblem.EMPTY),
        ("\u3000", LabelProblem.EMPTY),  # an ideographic space is whitespace too
        ("x" * (MAX_TYPED_LABEL_LENGTH + 1), LabelProblem.TOO_LONG),
        ("!!!", LabelProblem.NO_LETTERS),
        ("🚀🚀 🌱", LabelProblem.NO_LETTERS),
        ("¯\\_(ツ)_/¯", None),  # ツ is a letter
        ("-- ... --", LabelProblem.NO_LETTERS),
        ("x" * MAX_TYPED_LABEL_LENGTH, None),
        ("  " + "x" * MAX_TYPED_LABEL_LENGTH + "  ", None),  # spaces around do not count
        ("cat 🐱", None),
        ("7", None),
        ("草", None),
    ],
)
def test_typed_label_problems(typed: str, problem: LabelProblem | None) -> None:
    assert typed_label_problem(typed) is problem


def test_close_spellings() -> None:
    assert are_close("gras", "grass") and are_close("grasss", "grass")
    assert are_close("rcoket", "rocket")  # two letters swapped: one edit
    assert are_close("espresso", "expresso") and are_close("espresso", "expreso")  # long: two
    assert not are_close("latte", "lute")  # short words: one edit only
    assert not are_close("ab", "abc")  # too short to tell
    assert not are_close("grass", "grass")  # the same is not "close"
    assert not are_close("coffee", "rocket")


def test_class_names_are_safe_folder_names() -> None:
    assert class_name(" AC/DC ") == "AC-DC"
    assert class_name("../etc") == "-etc"
    assert class_name("..hidden") == "hidden"
    with pytest.raises(InvalidLabelDecision, match="no letters"):
        class_name("..")
    with pytest.raises(InvalidLabelDecision, match="too long"):
        class_name("草" * 70)  # 210 bytes


def corrections(*rows: tuple[str, int, int]) -> list[Correction]:
    """(label, user, corrections) with one kept photo per correction."""
    return [Correction(label, user, n, n) for label, user, n in rows]


def test_grouping_counts_photos_and_distinct_users() -> None:
    proposals = group_proposals(
        corrections(
            ("grass", 1, 2),
            ("Grass ", 2, 1),
            ("GRASS", 3, 1),
            ("grass", 3, 1),  # user 3 twice: one user
            ("gras", 4, 1),
            ("Brick", 5, 3),  # a known label by its key: no proposal
            ("selfie", 6, 1),
            ("lawn", 7, 2),
        ),
        known=["brick", "gravel"],
        decisions={},
    )
    (grass, gras, lawn, selfie) = proposals.pending
    assert grass.label == "grass" and grass.key == "grass"
    assert grass.spellings == (("grass", 3), ("GRASS", 1), ("Grass", 1))
    assert (grass.corrections, grass.photos, grass.users) == (5, 5, 3)
    # Close spellings stand together and name each other.
    assert gras.label == "gras" and gras.close == ("grass",) and grass.close == ("gras",)
    assert (lawn.label, selfie.label) == ("lawn", "selfie")
    assert proposals.decided == ()
    assert proposals.find(grass.id) == grass and proposals.find("0" * 12) is None


def test_close_known_labels_are_named_first() -> None:
    proposals = group_proposals(
        corrections(("gravell", 1, 1), ("gravel!", 2, 1)), ["gravel", "brick"], {}
    )
    first = proposals.pending[0]
    assert first.close[0] == "gravel"


def decision(
    label: str, kind: LabelDecisionKind, target: str | None = None, name: str | None = None
) -> LabelDecision:
    return LabelDecision(label_key(label), name or label, kind, target, 1, 0.0)


def test_decided_proposals_are_apart_from_pending() -> None:
    decisions = {"selfie": decision("selfie", LabelDecisionKind.REJECT)}
    proposals = group_proposals(corrections(("selfie", 1, 3), ("grass", 2, 1)), [], decisions)
    assert [p.label for p in proposals.pending] == ["grass"]
    (selfie,) = proposals.decided
    assert selfie.decision == decisions["selfie"] and selfie.corrections == 3


def test_the_book_says_what_each_label_trains_as() -> None:
    book = LabelBook(
        ["brick", "latte"],
        {
            d.key: d
            for d in [
                decision("grass", LabelDecisionKind.ADD),
                decision("gras", LabelDecisionKind.MERGE, "Grass"),
                decision("grazz", LabelDecisionKind.MERGE, "gras"),  # a chain of merges
                decision("bricks", LabelDecisionKind.MERGE, "brick"),
                decision("selfie", LabelDecisionKind.REJECT),
                decision("moss", LabelDecisionKind.MERGE, "lichen"),  # lichen: no decision
                decision("a", LabelDecisionKind.MERGE, "b"),
                decision("b", LabelDecisionKind.MERGE, "a"),  # a loop (hand-made)
                decision("AC/DC", LabelDecisionKind.ADD, name="AC-DC"),
            ]
        },
    )
    cases = {
        "brick": (Outcome.CLASS, "brick"),
        "Latte ": (Outcome.CLASS, "latte"),
        "GRASS": (Outcome.ADDED, "grass"),
        "gras": (Outcome.MERGED, "grass"),
        "grazz": (Outcome.MERGED, "grass"),
        "Bricks": (Outcome.MERGED, "brick"),
        "selfie": (Outcome.REJECTED, "selfie"),
        "moss": (Outcome.PENDING, "lichen"),
        "weeds": (Outcome.PENDING, "weeds"),
        "a": (Outcome.PENDING, "a"),
        "ac/dc": (Outcome.ADDED, "AC-DC"),
    }
    for label, (outcome, trains_as) in cases.items():
        resolution = book.resolve(label)
        assert (resolution.outcome, resolution.label) == (outcome, trains_as), label
    assert book.resolve("gras").trains and not book.resolve("selfie").trains


# --------------------------------------------------------------------------- the table


def answered(user_id: int, message_id: int, predicted: str = "brick") -> AnsweredPhoto:
    return AnsweredPhoto(
        chat_id=user_id,
        user_id=user_id,
        message_id=message_id,
        file_id=f"file-{message_id}",
        file_unique_id=f"unique-{message_id}",
        prediction=Prediction((LabelScore(predicted, 0.9), LabelScore("gravel", 0.1)), "m", 9, 9),
        uncertain=False,
    )


def correct(
    store: FeedbackStore, user_id: int, label: str, message_id: int, photo: str = "rocket"
) -> str:
    record = store.record_prediction(answered(user_id, message_id))
    store.record_verdict(
        record.id,
        user_id=user_id,
        kind="wrong",
        label=label,
        image=variant_bytes(photo, message_id),
    )
    return record.id


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[FeedbackStore]:
    opened = FeedbackStore.open(tmp_path / "data", clock=clock)
    try:
        yield opened
    finally:
        opened.close()


def test_forget_removes_a_users_photos_from_proposals(store: FeedbackStore) -> None:
    """Proposals are read from the verdicts: /forget takes a user's corrections out of every
    proposal and count at once."""
    correct(store, 1, "grass", 1)
    correct(store, 1, "Grass", 2)
    correct(store, 2, "grass", 3)
    correct(store, 2, "selfie", 4)
    store.labels.decide("selfie", "reject", admin_id=9)
    (grass,) = store.labels.proposals(["brick"]).pending
    assert (grass.corrections, grass.photos, grass.users) == (3, 3, 2)
    store.forget_user(1)
    (grass,) = store.labels.proposals(["brick"]).pending
    assert (grass.corrections, grass.photos, grass.users) == (1, 1, 1)
    store.forget_user(2)
    proposals = store.labels.proposals(["brick"])
    assert proposals.pending == () and proposals.decided == ()
    # The admin's decision is about the label, not the user: it is kept.
    assert "selfie" in store.labels.decisions()


def test_admins_reviews_overrule_the_users_label(store: FeedbackStore) -> None:
    kept = correct(store, 1, "grass", 1)
    relabelled = correct(store, 2, "grass", 2)
    discarded = correct(store, 3, "grass", 3)
    store.record_review(kept, admin_id=9, decision="confirm")
    store.record_review(relabelled, admin_id=9, decision="relabel", label="gravel")
    store.record_review(discarded, admin_id=9, decision="discard")
    (grass,) = store.labels.proposals(["brick", "gravel"]).pending
    assert (grass.corrections, grass.users) == (1, 1)


def test_decisions(store: FeedbackStore, clock: FakeClock) -> None:
    correct(store, 1, "rocket", 1)
    correct(store, 2, "rockett", 2)
    correct(store, 3, "spam", 3)
    labels = store.labels
    with pytest.raises(UnknownLabel):
        labels.decide("nobody typed this", "add", admin_id=9)
    with pytest.raises(InvalidLabelDecision, match="unknown label decision"):
        labels.decide("rocket", "promote", admin_id=9)
    with pytest.raises(InvalidLabelDecision, match="needs the label to merge into"):
        labels.decide("rockett", "merge", admin_id=9)
    with pytest.raises(InvalidLabelDecision, match="into itself"):
        labels.decide("rockett", "merge", target="ROCKETT", admin_id=9)

    merged = labels.decide("rockett", "merge", target="Rocket", admin_id=9)
    assert merged.recorded and merged.decision.target == "Rocket"
    clock.now += 1
    added = labels.decide(" ROCKET", "add", admin_id=8)
    assert added.recorded and added.decision.label == "ROCKET"
    # A second admin's tap does not overwrite the first's; an operator may.
    late = labels.decide("rocket", "reject", admin_id=7)
    assert not late.recorded and late.decision == added.decision
    assert labels.decide("spam", "reject", admin_id=9).recorded
    with pytest.raises(InvalidLabelDecision, match="rejected"):
        labels.decide("rockett", "merge", target="spam", admin_id=9, replace=True)
    # Merging into a merged label follows it to where it ends; a loop is refused.
    assert labels.decide("spam", "merge", target="rockett", replace=True).decision.target == (
        "ROCKET"
    )
    with pytest.raises(InvalidLabelDecision, match="circle"):
        labels.decide("rocket", "merge", target="spam", replace=True)
    assert labels.undo("Rocket") is not None
    assert labels.undo("rocket") is None
    assert "rocket" not in labels.decisions()
    book = LabelBook(["brick"], labels.decisions())
    assert book.resolve("rockett").outcome is Outcome.PENDING  # merged into what waits


async def test_the_async_log_serves_the_bots_label_calls(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path)
    correct(store, 1, "grass", 1)
    store.close()
    log = await SqliteFeedbackLog.open(tmp_path)
    try:
        proposals = await log.labels.label_proposals(["brick"])
        assert [p.label for p in proposals.pending] == ["grass"]
        outcome = await log.labels.decide_label("grass", "add", admin_id=5)
        assert outcome.recorded and outcome.decision.admin_id == 5
        assert (await log.labels.label_decisions())["grass"] == outcome.decision
        assert (await log.labels.label_proposals(["brick"])).pending == ()
        assert await log.labels.undo_label_decision("grass") == outcome.decision
    finally:
        await log.close()


# --------------------------------------------------------------------------- the bot's texts


def test_refusals_name_the_problem() -> None:
    assert "empty" in labeltexts.refusal(LabelProblem.EMPTY, "  ")
    too_long = labeltexts.refusal(LabelProblem.TOO_LONG, "x" * 80)
    assert "80 characters" in too_long and "at most 64" in too_long
    assert "“!!!” has no letters or digits" in labeltexts.refusal(LabelProblem.NO_LETTERS, "!!!")
    for problem in LabelProblem:
        assert "/cancel" in labeltexts.refusal(problem, "!")


def test_stored_texts_say_when_a_label_was_merged() -> None:
    assert labeltexts.stored("coffee", "coffee", known=True) == (
        "Stored “coffee” (one of the labels the model knows) as the right label for that "
        "photo. Thank you!"
    )
    merged = labeltexts.stored("coffee", "COFFEE ", known=True)
    assert "“COFFEE” is the same label written differently" in merged
    new = labeltexts.stored("grass", " grass", known=False)
    assert "(a new label)" in new and "An admin decides" in new
    added = labeltexts.stored("grass", "Grass", known=False, added=True)
    assert "a new label the admins added; “Grass” is the same label" in added
    assert "An admin decides" not in added


def test_label_buttons_fit_in_64_bytes_and_parse_back() -> None:
    proposal_id, target = label_id("grass" * 40), label_id("lawn")
    for button in (
        LabelButton(proposal_id, LabelAction.ADD),
        LabelButton(proposal_id, LabelAction.REJECT),
        LabelButton(proposal_id, LabelAction.MERGE, target_id=target),
        LabelButton(proposal_id, LabelAction.PAGE, page=9999),
        LabelButton(proposal_id, LabelAction.UNDO),
    ):
        data = button.encode()
        assert len(data.encode()) <= 64 and LabelButton.parse(data) == button
    for forged in ("l:grass:a", f"l:{proposal_id}:m:", f"l:{proposal_id}:q", f"l:{proposal_id}"):
        assert LabelButton.parse(forged) is None
    markup = keyboards.proposal_keyboard(proposal_id, "grass", 15, 15, [("gras", target)])
    texts = [b.text for row in markup.inline_keyboard for b in row]
    assert texts == [
        "➕ Add “grass” (15 photos, 15 users)",
        "🔀 Merge into “gras”",
        "📚 Merge into…",
        "🚫 Reject",
    ]
    one = keyboards.proposal_keyboard(proposal_id, "moss", 1, 1, [])
    assert one.inline_keyboard[0][0].text == "➕ Add “moss” (1 photo, 1 user)"
    targets = [(f"label {n}", label_id(f"label {n}")) for n in range(23)]
    page = keyboards.merge_targets_keyboard(proposal_id, targets, 2)
    texts = [b.text for row in page.inline_keyboard for b in row]
    assert texts[:3] == ["label 20", "label 21", "label 22"] and "3/3" in texts


def test_the_retrain_summary_shows_old_and_new_on_held_out_photos() -> None:
    metrics = {
        "accuracy": 0.95,
        "disputed_holdout": {
            "images": 10,
            "old_version": "v2",
            "old_right": 0,
            "new_right": 9,
            "per_label": {
                "grass": {"images": 8, "old": 0, "new": 8},
                "brick": {"images": 2, "old": 0, "new": 1},
            },
        },
    }
    params = {
        "feedback_labels": {
            "added": {"grass": 12},
            "merged": {"gras": "grass"},
            "short": {"moss": 1},
            "rejected": {"selfie": 3},
            "pending": {"weeds": 15, "lichen": 1},
            "min_images": 3,
        }
    }
    text = labeltexts.retrain_lines(metrics, params)
    assert "On photos users corrected (10 photos held out from training): old 0% → new 90%" in (
        text
    )
    assert "• grass: 0/8 → 8/8" in text and "• brick: 0/2 → 1/2" in text
    assert "New labels trained: grass (12 photos)" in text
    assert "“gras” → “grass”" in text
    assert "“moss” has 1 photo: it needs 2 more to be trained" in text
    assert "3 corrections name “selfie”: rejected, not trained." in text
    assert "15 corrections name “weeds”, not yet accepted: /labels" in text
    assert "1 correction names “lichen”" in text
    too_few = {"disputed_holdout": {"images": 0, "note": "too few disputed photos (4)"}}
    assert labeltexts.retrain_lines(too_few, {}) == (
        "On photos users corrected: too few disputed photos (4)."
    )
    assert labeltexts.retrain_lines({"accuracy": 0.9}, {}) == ""  # a card from before


# --------------------------------------------------------------------------- training data


@pytest.fixture
def taught(tmp_path: Path) -> tuple[Path, Path]:
    """Folders coffee and cat; a feedback log whose users taught rocket (added), "cofee"
    (merged into coffee), "selfie" (rejected), "moss" (added, too few photos), "weeds"
    (pending)."""
    images = tmp_path / "photos"
    make_folders(images, {"coffee": 4, "cat": 4}, seed=5)
    data_dir = tmp_path / "data"
    store = FeedbackStore.open(data_dir)
    message = 0
    for label, photo, users in [
        ("rocket", "rocket", 9),
        ("Rocket ", "rocket", 2),
        ("rockett", "rocket", 1),
        ("cofee", "coffee", 3),
        ("selfie", "astronaut", 2),
        ("moss", "cat", 2),
        ("weeds", "astronaut", 1),
    ]:
        for _ in range(users):
            message += 1
            correct(store, 100 + message, label, message, photo)
    store.labels.decide("rocket", "add", admin_id=1)
    store.labels.decide("rockett", "merge", target="rocket", admin_id=1)
    store.labels.decide("cofee", "merge", target="coffee", admin_id=1)
    store.labels.decide("selfie", "reject", admin_id=1)
    store.labels.decide("moss", "add", admin_id=1)
    store.close()
    return images, data_dir


def test_feedback_trains_as_the_admins_decided(taught: tuple[Path, Path], tmp_path: Path) -> None:
    from training.data import collect

    images, data_dir = taught
    args = {"presize": 64, "data_dir": data_dir, "with_feedback": True, "reviewed_only": True}
    for work in ("work", "again"):
        (tmp_path / work).mkdir()
    dataset = collect(images, tmp_path / "work", **args)  # type: ignore[arg-type]
    assert dataset.labels == ["cat", "coffee", "rocket"]
    summary = dataset.feedback
    assert summary is not None
    assert summary.new_labels == ["rocket"]
    assert summary.merged == {"cofee": "coffee", "rockett": "rocket"}
    assert summary.short == {"moss": 2}
    assert dict(summary.rejected) == {"selfie": 2}
    assert dict(summary.pending) == {"weeds": 1}
    # 15 disputed photos trained on: a quarter of each label's held out, by content hash.
    held = sorted(example.label for example in dataset.held_out)
    assert held == ["coffee", "rocket", "rocket", "rocket"]
    trained = dataset.counts()
    assert trained == {"cat": 4, "coffee": 6, "rocket": 9}
    assert summary.added == {"coffee": 2, "rocket": 9}
    again = collect(images, tmp_path / "again", **args)  # type: ignore[arg-type]
    assert [e.sha256 for e in again.held_out] == [e.sha256 for e in dataset.held_out]
    text = "\n".join(dataset.describe())
    assert "new labels the admins added, trained as classes: 'rocket' (9)" in text
    assert "'moss' has 2 photos, it needs 1 more to be trained (at least 3)" in text
    assert "rejected by the admins, not trained: 'selfie' (2)" in text
    assert "not yet accepted (decide in /labels" in text and "'weeds' (1)" in text
    assert "Held out from training: 4 disputed photos (coffee 1, rocket 3)" in text
    card = summary.labels_json()
    assert card["added"] == {"rocket": 9} and card["short"] == {"moss": 2}


def test_too_few_disputed_photos_are_not_held_out(tmp_path: Path) -> None:
    from training.data import collect

    images = tmp_path / "photos"
    make_folders(images, {"coffee": 4, "cat": 4}, seed=5)
    data_dir = tmp_path / "data"
    store = FeedbackStore.open(data_dir)
    for n in range(4):
        correct(store, 10 + n, "cat", n + 1, "cat")
    store.close()
    (tmp_path / "work").mkdir()
    dataset = collect(images, tmp_path / "work", presize=64, data_dir=data_dir, with_feedback=True)
    assert dataset.held_out == [] and dataset.counts()["cat"] == 8
    assert dataset.holdout_note == (
        "too few disputed photos to hold some out (4; at least 10 are needed)"
    )


# --------------------------------------------------------------------------- the CLI


def training_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "training", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_cli_lists_and_decides(taught: tuple[Path, Path]) -> None:
    _, data_dir = taught
    listed = training_cli("labels", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    # No model version yet: nothing is known, every correction is a proposal.
    assert "'weeds': 1 correction, 1 photo, 1 user" in listed.stdout
    assert "'rocket': 11 corrections, 11 photos, 11 users; added as 'rocket'" in listed.stdout
    assert "spelled 'rocket' (9), 'Rocket' (2)" not in listed.stdout  # decided: one line

    added = training_cli("labels", "add", "WEEDS", data_dir=data_dir)
    assert added.returncode == 0, added.stderr
    assert "Added 'WEEDS' (1 correction, 1 photo, 1 user)" in added.stdout
    merged = training_cli("labels", "merge", "weeds", "rocket", data_dir=data_dir)
    assert "Merged 'weeds' into 'rocket'" in merged.stdout
    assert "It replaces the earlier decision: added as 'WEEDS'" in merged.stdout
    assert "is not a label of" not in merged.stdout  # rocket is an added label
    rejected = training_cli("labels", "reject", "rocket", data_dir=data_dir)
    assert "Rejected 'rocket' (11 corrections" in rejected.stdout
    undone = training_cli("labels", "undo", "Rocket", data_dir=data_dir)
    assert "'Rocket' waits for a decision again" in undone.stdout

    unknown = training_cli("labels", "add", "nobody typed this", data_dir=data_dir)
    assert unknown.returncode == 2 and "no correction names 'nobody typed this'" in (
        unknown.stderr
    )
    circle = training_cli("labels", "merge", "rockett", "weeds", data_dir=data_dir)
    assert circle.returncode == 0, circle.stderr  # weeds → rocket, which waits again
    loop = training_cli("labels", "merge", "rocket", "rockett", data_dir=data_dir)
    assert loop.returncode == 2 and "circle" in loop.stderr

    as_json = json.loads(training_cli("labels", "--json", data_dir=data_dir).stdout)
    pending = {p["label"]: p for p in as_json["pending"]}
    assert pending["rocket"]["spellings"] == {"rocket": 9, "Rocket": 2}
    assert pending["rocket"]["users"] == 11 and pending["rocket"]["close"] == ["rockett"]
    missing = training_cli("labels", data_dir=data_dir.parent / "nowhere")
    assert missing.returncode == 2 and "no feedback database" in missing.stderr
