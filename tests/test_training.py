"""`python -m training fit`: photos in label folders become a registered, served model version."""

from __future__ import annotations

import json
import os
import pickletools
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from model.feedback import AnsweredPhoto, FeedbackStore
from model.registry import ModelCard, Registry
from model.types import LabelScore, Prediction
from tests import images
from tests.botharness import start_bot
from tests.trainingdata import make_folders, variant_bytes
from training.data import DataError, Dataset, Example, check_counts, collect, scan
from training.report import format_metrics, metrics_from_confusion

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
PER_LABEL = {"coffee": 16, "cat": 16, "rocket": 16}
# Disputes in the feedback log: (predicted, corrected label, photo, seed). "Cat" joins the
# folder "cat" (case is ignored); "latte" has no folder and is left out.
DISPUTES = [
    ("espresso", "coffee", "coffee", 101),
    ("cup", "coffee", "coffee", 102),
    ("espresso", "coffee", "coffee", 103),
    ("missile", "rocket", "rocket", 104),
    ("projectile", "rocket", "rocket", 105),
    ("tabby", "Cat", "cat", 106),
    ("espresso", "latte", "coffee", 107),
]
ADDED = {"cat": 1, "coffee": 3, "rocket": 2}
NOISY_ENV = ("OMP_NUM_THREADS",)


def run_training(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m training ...` in a fresh interpreter; output captured as text."""
    base = {k: v for k, v in os.environ.items() if k not in NOISY_ENV and k != "DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def record_disputes(data_dir: Path) -> None:
    """A feedback log with users' corrections, as the bot writes it."""
    store = FeedbackStore.open(data_dir)
    try:
        for message_id, (predicted, corrected, photo, seed) in enumerate(DISPUTES, start=1):
            record = store.record_prediction(
                AnsweredPhoto(
                    chat_id=1,
                    user_id=42,
                    message_id=message_id,
                    file_id=f"f{message_id}",
                    file_unique_id=f"u{message_id}",
                    prediction=Prediction(
                        (LabelScore(predicted, 0.61), LabelScore("other", 0.2)), "v1@abc", 400, 300
                    ),
                    uncertain=False,
                    image=None,
                )
            )
            store.record_verdict(
                record.id,
                user_id=42,
                kind="wrong",
                label=corrected,
                image=variant_bytes(photo, seed),
            )
        # An "unsure" verdict is no training data.
        record = store.record_prediction(
            AnsweredPhoto(
                chat_id=1,
                user_id=42,
                message_id=99,
                file_id="f99",
                file_unique_id="u99",
                prediction=Prediction((LabelScore("espresso", 0.4),), "v1@abc", 400, 300),
                uncertain=True,
                image=None,
            )
        )
        store.record_verdict(record.id, user_id=42, kind="unsure", label=None)
    finally:
        store.close()


@dataclass
class Fitted:
    """One fit shared by the tests of this module."""

    images_dir: Path
    data_dir: Path
    result: subprocess.CompletedProcess[str]
    registry: Registry
    card: ModelCard


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    root = tmp_path_factory.mktemp("fit")
    images_dir = root / "photos"
    make_folders(images_dir, PER_LABEL, seed=7)
    # Left out and listed, while the fit goes on: a cut-off upload and a note.
    (images_dir / "cat" / "cut-off.jpg").write_bytes(images.truncated_jpeg())
    (images_dir / "rocket" / "notes.txt").write_text("launch day\n")
    data_dir = root / "data"
    record_disputes(data_dir)
    result = run_training(
        "fit",
        str(images_dir),
        "--data-dir",
        str(data_dir),
        "--epochs",
        "2",
        "--with-feedback",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    registry = Registry(data_dir / "models")
    card = registry.versions()[-1]
    return Fitted(images_dir, data_dir, result, registry, card)


def test_fit_reaches_high_validation_accuracy(fitted: Fitted) -> None:
    """Three labels of real photos: at least 90% of the validation images right."""
    metrics = fitted.card.metrics
    assert metrics is not None
    assert metrics["accuracy"] >= 0.9, fitted.result.stdout[-2000:]
    assert metrics["error_rate"] == pytest.approx(1 - metrics["accuracy"])
    assert set(metrics["per_label"]) == set(PER_LABEL)
    for row in metrics["per_label"].values():
        assert {"precision", "recall", "images"} <= set(row)
        assert row["images"] >= 3
    output = fitted.result.stdout
    assert re.search(r"Validation \(\d+ images\): accuracy \d+\.\d%, error rate", output)
    assert re.search(r"^\s+rocket\s+\d+\.\d%\s+\d+\.\d%\s+\d+$", output, re.MULTILINE)


def test_fit_shows_fastai_progress_and_its_plan(fitted: Fitted) -> None:
    """The plan line, then fastai's epoch table (the bot follows both for /retrain)."""
    output = fitted.result.stdout
    assert re.search(
        r"^training: 3 epochs in all \(1 with the pretrained body frozen", output, re.M
    )
    assert "train_loss  valid_loss  accuracy  error_rate" in output
    rows = [
        part
        for line in output.splitlines()
        for part in line.split("\r")
        if re.match(r"^\s*\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s", part)
    ]
    assert len(rows) == 3, output[-3000:]
    assert "Traceback" not in fitted.result.stderr


def test_fit_registers_an_active_version_with_its_card_and_plots(fitted: Fitted) -> None:
    """A new version: card with everything about it, the two PNGs, and it is active."""
    registry, card = fitted.registry, fitted.card
    versions = registry.versions()
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].is_default and len(versions[0].labels) == 1000
    # The default's export was moved into v1, not copied: the data folder holds it once.
    assert not list(registry.models_dir.glob("*.pkl"))
    assert registry.active() == card
    assert card.labels == ("cat", "coffee", "rocket")
    assert card.architecture == "tf_efficientnet_lite0"
    assert card.image_size == 224
    assert card.parent == versions[0].version
    assert card.training_images == sum(PER_LABEL.values()) + sum(ADDED.values())
    assert re.fullmatch(r"[0-9a-f]{64}", card.dataset_fingerprint or "")
    assert re.fullmatch(r"v2-\d{8}-\d{6}", card.version)
    assert card.params["epochs"] == 2 and card.params["seed"] == 42
    path = registry.path_for(card)  # verifies the sha256
    assert path.stat().st_size == card.file_size
    stored = json.loads((registry.version_dir(card) / "card.json").read_text())
    assert stored["sha256"] == card.sha256 and stored["label_count"] == 3
    for kind in ("confusion_matrix", "top_losses"):
        png = registry.artifact(card, kind)
        assert png is not None and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert png.stat().st_size > 5_000
        assert str(png) in fitted.result.stdout


def test_unreadable_images_are_skipped_and_listed(fitted: Fitted) -> None:
    output = fitted.result.stdout
    assert "Skipped 1 unreadable image(s):" in output
    assert re.search(r"^\s+cat/cut-off\.jpg: damaged or cut off", output, re.MULTILINE)
    assert "rocket/notes.txt" in output


def test_with_feedback_adds_the_disputes_per_label(fitted: Fitted) -> None:
    """Corrected disputes join their label's images; counted per label, on the card too."""
    output = fitted.result.stdout
    assert "Feedback: added 6 images from the bot's feedback log (cat 1, coffee 3, rocket 2)" in (
        output
    )
    assert "not yet accepted (decide in /labels or with `python -m training labels`): " in output
    assert "'latte' (1)" in output
    # Too few disputed photos to hold some out for the old-vs-new comparison: it says so.
    too_few = "too few disputed photos to hold some out (6; at least 10 are needed)"
    assert f"On photos users corrected: {too_few}." in output
    assert (fitted.card.metrics or {})["disputed_holdout"] == {"images": 0, "note": too_few}
    assert fitted.card.params["feedback_labels"]["pending"] == {"latte": 1}
    assert fitted.card.feedback_images == 6
    assert fitted.card.params["feedback_per_label"] == ADDED
    assert fitted.card.params["with_feedback"] is True


def test_the_exported_learner_pickles_nothing_from_main(fitted: Fitted) -> None:
    """The learner refers to importable modules only (model.arch for the architecture)."""
    with zipfile.ZipFile(fitted.registry.path_for(fitted.card)) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        pickled = archive.read(name)
    # torch saves with pickle protocol 2: every class or function is a GLOBAL "module name".
    referenced = {
        str(argument)
        for opcode, argument, _ in pickletools.genops(pickled)
        if opcode.name == "GLOBAL"
    }
    modules = {name.split()[0] for name in referenced}
    assert "model.arch efficientnet_lite0" in referenced
    assert not {m for m in modules if m.startswith(("__main__", "__mp_main__", "training"))}
    # Of this project's modules, only the architecture, which the bot's workers import.
    assert {m for m in modules if m.split(".")[0] in ("model", "training", "bot")} == {
        "model.arch"
    }


def test_models_lists_the_new_version_as_active(fitted: Fitted) -> None:
    result = run_training("models", "--data-dir", str(fitted.data_dir), timeout=60)
    assert result.returncode == 0, result.stderr
    active = [line for line in result.stdout.splitlines() if line.startswith("*  v")]
    assert len(active) == 1 and fitted.card.version in active[0], result.stdout
    assert "bundled ImageNet default" in result.stdout


def test_the_bot_serves_the_new_version(fitted: Fitted, tmp_path: Path) -> None:
    """End to end: the bot serves the active version from the registry, with its labels."""
    bot = start_bot(tmp_path, {"DATA_DIR": str(fitted.data_dir)})
    try:
        coffee = bot.send_photo(images.coffee_jpeg())["replies"]
        assert len(coffee) == 1 and re.fullmatch(r"coffee — >?\d+%", coffee[0]["text"]), coffee
        cat = bot.send_photo(images.chelsea_jpeg())["replies"]
        assert len(cat) == 1 and cat[0]["text"].startswith("cat — "), cat
        photo = images.encode(Image.fromarray(skimage.data.rocket()), "JPEG", quality=90)
        rocket = bot.send_photo(photo)["replies"]
        assert len(rocket) == 1 and rocket[0]["text"].startswith("rocket — "), rocket
    finally:
        assert bot.stop() == 0, bot.log()[-3000:]


def test_a_fit_without_activation_is_reproducible(fitted: Fitted) -> None:
    """Same data, same seed: the same split and the same numbers; --no-activate leaves the
    active version alone."""
    quick = ["--epochs", "1", "--freeze-epochs", "0", "--no-activate"]
    args = ["fit", str(fitted.images_dir), "--data-dir", str(fitted.data_dir), *quick]
    first, second = run_training(*args), run_training(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = fitted.registry.versions()[-2:]
    assert (a.number, b.number) == (fitted.card.number + 1, fitted.card.number + 2)
    assert a.metrics is not None and b.metrics is not None
    assert a.metrics["confusion_matrix"] == b.metrics["confusion_matrix"]
    assert a.metrics["valid_loss"] == pytest.approx(b.metrics["valid_loss"], rel=1e-5)
    assert a.dataset_fingerprint == b.dataset_fingerprint != fitted.card.dataset_fingerprint
    assert a.feedback_images == 0
    assert fitted.registry.active() == fitted.card
    assert "not active; switch with `python -m training use" in first.stdout


# --------------------------------------------------------------------------- bad data


def tiny_dataset(root: Path, per_label: dict[str, int]) -> Path:
    make_folders(root, per_label, seed=3)
    return root


def bad_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """Each bad layout and what its error must say."""
    empty = root / "empty"
    empty.mkdir()
    loose = root / "loose"
    loose.mkdir()
    (loose / "a.jpg").write_bytes(images.coffee_jpeg())
    one = tiny_dataset(root / "one", {"coffee": 4})
    few = tiny_dataset(root / "few", {"coffee": 4, "cat": 2})
    hollow = tiny_dataset(root / "hollow", {"coffee": 4, "cat": 4})
    (hollow / "rocket").mkdir()
    broken = tiny_dataset(root / "broken", {"coffee": 4, "cat": 3})
    (broken / "cat" / "IMG_0000.jpg").write_bytes(images.truncated_jpeg())
    (broken / "cat" / "IMG_0001.jpg").write_bytes(b"")
    return {
        "missing": (root / "nowhere", "nowhere does not exist"),
        "empty": (empty, "has no label folders"),
        "loose": (loose, "1 image lies directly in it: move them into label folders"),
        "one label": (one, "has 1 label folder(s) (only 'coffee'); a classifier needs at least 2"),
        "few": (few, "too few images: 'cat' has 2; each label needs at least 3"),
        "hollow": (hollow, "too few images: 'rocket' has 0"),
        "unreadable": (
            broken,
            "too few images: 'cat' has 1; each label needs at least 3 (after skipping 2 "
            "unreadable image(s): cat/IMG_0000.jpg: damaged or cut off",
        ),
    }


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return bad_cases(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "case", ["missing", "empty", "loose", "one label", "few", "hollow", "unreadable"]
)
def test_bad_data_gets_a_clear_error(
    bad_root: dict[str, tuple[Path, str]], case: str, tmp_path: Path
) -> None:
    """Exit code 2 and a message naming the problem; no traceback, nothing registered."""
    path, message = bad_root[case]
    result = run_training("fit", str(path), "--data-dir", str(tmp_path), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("fit: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()


def test_an_unknown_architecture_is_refused(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "photos", {"coffee": 3, "cat": 3})
    result = run_training("fit", str(data), "--data-dir", str(tmp_path), "--arch", "nosuchnet")
    assert result.returncode == 2, result.stderr
    assert "unknown architecture 'nosuchnet'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("arch", ["resnet34", "timm:resnet18"])
def test_an_architecture_without_weights_offline_suggests_the_default(
    tmp_path: Path, arch: str
) -> None:
    """torchvision and timm weights that are not cached: a clear error, quickly, no hang."""
    data = tiny_dataset(tmp_path / "photos", {"coffee": 3, "cat": 3})
    empty_cache = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf")}
    result = run_training(
        "fit",
        str(data),
        "--data-dir",
        str(tmp_path),
        "--arch",
        arch,
        env={**empty_cache, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "are not on this machine and cannot be downloaded" in result.stderr
    assert "efficientnet_lite0" in result.stderr and "work offline" in result.stderr
    assert "Traceback" not in result.stderr


def cache_weights(arch: str, home: Path) -> dict[str, str]:
    """Random weights where torchvision or timm look for downloaded ones; the env to use them.

    Stands in for a machine that downloaded them once: no network is needed to fit then.
    """
    import timm
    import torch
    import torchvision
    from safetensors.torch import save_file

    if arch == "resnet18":
        checkpoints = home / "torch" / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        url = torchvision.models.ResNet18_Weights.DEFAULT.url
        torch.save(torchvision.models.resnet18().state_dict(), checkpoints / url.split("/")[-1])
        return {"TORCH_HOME": str(home / "torch"), "HF_HOME": str(home / "hf")}
    name = arch.removeprefix("timm:")
    repo = home / "hf" / "hub" / f"models--timm--{name}.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    state = timm.create_model(name, pretrained=False).state_dict()
    save_file(
        {key: value.contiguous() for key, value in state.items()},
        str(repo / "snapshots" / ("0" * 40) / "model.safetensors"),
    )
    return {"TORCH_HOME": str(home / "torch"), "HF_HOME": str(home / "hf")}


@pytest.mark.parametrize(
    ("arch", "recorded"), [("resnet18", "resnet18"), ("timm:test_resnet", "timm:test_resnet")]
)
def test_other_architectures_fit_from_cached_weights(
    tmp_path: Path, arch: str, recorded: str
) -> None:
    """A torchvision or timm architecture whose weights are in the local cache: no network,
    a registered version that records the architecture."""
    data = tiny_dataset(tmp_path / "photos", {"coffee": 4, "cat": 4})
    env = cache_weights(arch, tmp_path / "cache")
    quick = ["--epochs", "1", "--freeze-epochs", "0", "--size", "64", "--no-activate"]
    result = run_training(
        "fit", str(data), "--data-dir", str(tmp_path / "data"), "--arch", arch, *quick, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Downloading" not in result.stdout
    card = Registry(tmp_path / "data" / "models").versions()[-1]
    assert card.architecture == recorded and card.labels == ("cat", "coffee")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--valid-pct", "1.5"], "must be between 0 and 1"),
        (["--epochs", "0"], "must be at least 1"),
        (["--lr", "fast"], "not a number or 'find'"),
        (["--reviewed-only"], "--reviewed-only needs --with-feedback"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_training("fit", str(tmp_path), *args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_with_feedback_and_no_feedback_log_is_an_error(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "photos", {"coffee": 3, "cat": 3})
    result = run_training(
        "fit", str(data), "--data-dir", str(tmp_path / "data"), "--with-feedback", timeout=60
    )
    assert result.returncode == 2
    assert "--with-feedback: no feedback database" in result.stderr


# --------------------------------------------------------------------------- in process


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[Dataset]:
    root = tiny_dataset(tmp_path / "photos", {"coffee": 5, "cat": 5, "rocket": 10})
    (root / "coffee" / "again.jpg").write_bytes((root / "coffee" / "IMG_0000.jpg").read_bytes())
    yield collect(root, tmp_path / "work", presize=100)


def test_collect_prepares_upright_small_copies_and_drops_duplicates(prepared: Dataset) -> None:
    assert prepared.labels == ["cat", "coffee", "rocket"]
    assert prepared.counts() == {"cat": 5, "coffee": 5, "rocket": 10}
    assert prepared.duplicates == [("coffee/again.jpg", "coffee/IMG_0000.jpg")]
    for example in prepared.examples:
        with Image.open(example.image) as image:
            assert image.mode == "RGB" and min(image.size) == 100
        assert example.image.parent.name == example.label


def test_the_split_is_stratified_and_seeded(prepared: Dataset) -> None:
    valid = prepared.split(0.2, seed=1)
    assert valid == prepared.split(0.2, seed=1)
    assert valid != prepared.split(0.2, seed=2)
    labels = sorted(prepared.examples[i].label for i in valid)
    assert labels == ["cat", "coffee", "rocket", "rocket"]


def test_the_fingerprint_follows_the_file_list_and_sizes(prepared: Dataset) -> None:
    same = Dataset(prepared.root, prepared.labels, list(reversed(prepared.examples)))
    assert same.fingerprint() == prepared.fingerprint()
    first = prepared.examples[0]
    changed = [Example(first.image, first.label, first.name, first.size + 1, first.sha256)]
    other = Dataset(prepared.root, prepared.labels, changed + prepared.examples[1:])
    assert other.fingerprint() != prepared.fingerprint()


def test_scan_reads_label_folders_recursively_and_skips_hidden(tmp_path: Path) -> None:
    make_folders(tmp_path / "a" / "nested", {"coffee": 2}, seed=1)
    make_folders(tmp_path / ".git", {"cat": 1}, seed=1)
    make_folders(tmp_path / "b", {"cat": 1}, seed=1)
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    sources, ignored = scan(tmp_path)
    assert sorted(sources) == ["a", "b"]
    assert [s.name for s in sources["a"]] == [
        "a/nested/coffee/IMG_0000.jpg",
        "a/nested/coffee/IMG_0001.jpg",
    ]
    assert ignored == []
    with pytest.raises(DataError, match="needs at least 3"):
        check_counts({label: len(found) for label, found in sources.items()}, tmp_path)


def test_metrics_from_a_confusion_matrix() -> None:
    metrics = metrics_from_confusion([[3, 1, 0], [0, 4, 0], [0, 0, 0]], ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(7 / 8)
    assert metrics["per_label"]["a"] == {"precision": 1.0, "recall": 0.75, "images": 4}
    assert metrics["per_label"]["b"]["precision"] == pytest.approx(0.8)
    assert metrics["per_label"]["c"] == {"precision": None, "recall": None, "images": 0}
    text = "\n".join(format_metrics(metrics))
    assert "accuracy 87.5%, error rate 12.5%" in text
    assert re.search(r"^\s+c\s+–\s+–\s+0$", text, re.MULTILINE)


def test_training_modules_import_no_torch_until_fitting() -> None:
    """`models`, `use` and bad-data errors stay fast: importing the CLI loads no torch."""
    code = (
        "import sys, training.__main__, training.fit, training.data, training.report, "
        "model.registry, model.arch; "
        "print(sorted(m for m in ('torch', 'fastai', 'timm', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_an_unreachable_download_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the probe fails within seconds and the download is never started."""
    from training.fit import ArchitectureError, _download

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VERDICT_OFFLINE", raising=False)
    started = []
    with pytest.raises(ArchitectureError, match=r"host\.invalid cannot be reached"):
        _download("somenet", "host.invalid", lambda: started.append(1))
    assert started == []


def test_feedback_follows_the_admins_review(tmp_path: Path) -> None:
    """With reviews, the reviewed label counts; --reviewed-only takes reviewed items only;
    labels that need a hashed folder name ("a/b") still find their folder's images."""
    from training.data import feedback_sources

    data_dir = tmp_path / "data"
    store = FeedbackStore.open(data_dir)
    ids = []
    for message_id, (predicted, corrected, photo, seed) in enumerate(
        [
            ("espresso", "coffee", "coffee", 1),  # relabelled by the admin: rocket
            ("espresso", "coffee", "coffee", 2),  # discarded by the admin
            ("espresso", "coffee", "coffee", 3),  # not reviewed
            ("tabby", "cats/dogs", "cat", 4),  # confirmed; the label is unsafe as a folder
        ],
        start=1,
    ):
        record = store.record_prediction(
            AnsweredPhoto(
                chat_id=1,
                user_id=42,
                message_id=message_id,
                file_id=f"f{message_id}",
                file_unique_id=f"u{message_id}",
                prediction=Prediction((LabelScore(predicted, 0.7),), "v1@abc", 400, 300),
                uncertain=False,
                image=None,
            )
        )
        store.record_verdict(
            record.id, user_id=42, kind="wrong", label=corrected, image=variant_bytes(photo, seed)
        )
        ids.append(record.id)
    store.record_review(ids[0], admin_id=1, decision="relabel", label="rocket")
    store.record_review(ids[1], admin_id=1, decision="discard")
    store.record_review(ids[3], admin_id=1, decision="confirm")
    store.close()
    labels = ["cats/dogs", "coffee", "rocket"]  # as if PATH had such folders

    sources, summary = feedback_sources(data_dir, labels, tmp_path / "all")
    assert sorted(s.label for s in sources) == ["cats/dogs", "coffee", "rocket"]
    assert summary.exported == 3 and not summary.unknown_labels

    sources, summary = feedback_sources(data_dir, labels, tmp_path / "reviewed", True)
    assert sorted(s.label for s in sources) == ["cats/dogs", "rocket"]
