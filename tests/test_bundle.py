"""Bundles: one file carrying a model version to another install (training/bundle.py writes
it, model/seed.py reads it), and seeding an empty registry from one (the slim image).

The files are stand-ins (bytes, not a learner or an ONNX graph): the bundle logic only moves,
hashes and registers them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from model.cards import CARD_NAME, IntegrityError, ModelCard, RegistryError
from model.compiled import FORM_FP32, FORM_INT8, CompiledForm, CompileRecord, PreprocessSpec
from model.registry import LEARNER_OMITTED, Registry, learner_omitted
from model.seed import MANIFEST_NAME, BundleError, import_bundle, is_bundle, seed_registry
from training.bundle import add_commands, make_bundle

ROOT = Path(__file__).resolve().parents[1]
LEARNER = b"a learner, pickled"
FP32 = b"an onnx graph, fp32"
INT8 = b"an onnx graph, int8"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compiled_version(registry: Registry, tmp_path: Path, *, compiled: bool = True) -> ModelCard:
    """A registered version with metrics, params, an artifact and (by default) both ONNX
    forms recorded on its card."""
    source = tmp_path / "made"
    source.mkdir(parents=True, exist_ok=True)
    (source / "export.pkl").write_bytes(LEARNER)
    (source / "confusion_matrix.png").write_bytes(b"a png")
    card = registry.register(
        source / "export.pkl",
        architecture="tf_efficientnet_lite0",
        labels=["black", "grizzly", "teddy"],
        image_size=224,
        metrics={"accuracy": 0.93},
        parent="v1-20260101-000000",
        params={"epochs": 4},
        artifacts={"confusion_matrix": source / "confusion_matrix.png"},
        activate=True,
    )
    if not compiled:
        return card
    (source / "model.onnx").write_bytes(FP32)
    (source / "model-int8.onnx").write_bytes(INT8)
    record = CompileRecord(
        compiled_at="2026-12-01T00:00:00+00:00",
        spec=PreprocessSpec(width=224, height=224),
        forms={
            FORM_FP32: CompiledForm(FORM_FP32, "model.onnx", sha(FP32), len(FP32), 12.0),
            FORM_INT8: CompiledForm(FORM_INT8, "model-int8.onnx", sha(INT8), len(INT8), 6.0),
        },
        int8="kept",
    )
    return registry.record_compiled(
        card,
        record,
        {FORM_FP32: source / "model.onnx", FORM_INT8: source / "model-int8.onnx"},
    )


@pytest.fixture
def here(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "here" / "models")


@pytest.fixture
def there(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "there" / "models")


def carried(card: ModelCard) -> dict[str, object]:
    """What a bundle carries over: the card without what the new registry gives anew."""
    data = card.to_json()
    for key in ("version", "number", "created", "imported", LEARNER_OMITTED, "artifacts"):
        data.pop(key, None)
    return data


def test_a_bundle_round_trip_makes_a_new_version_with_the_same_card_and_files(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    there_first = compiled_version(there, tmp_path / "a")  # "there" already has a v1
    original = compiled_version(here, tmp_path)
    (tmp_path / "out").mkdir()
    bundle = make_bundle(here, original.version, tmp_path / "out")  # a folder: <version>.tar
    assert bundle == tmp_path / "out" / f"{original.version}.tar" and is_bundle(bundle)
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
    assert names[0] == MANIFEST_NAME
    assert set(names) == {
        MANIFEST_NAME,
        CARD_NAME,
        "model.pkl",
        "model.onnx",
        "model-int8.onnx",
        "confusion_matrix.png",
    }

    card = import_bundle(there, bundle)
    assert card.number == there_first.number + 1 and card.version != original.version
    assert carried(card) == carried(original)
    assert card.labels == original.labels and card.metrics == {"accuracy": 0.93}
    assert card.parent == original.parent and card.params == {"epochs": 4}
    assert card.compiled == original.compiled and not learner_omitted(card)
    assert card.extra["imported"]["from_version"] == original.version
    assert there.active() == card
    assert there.checked_model(card).path.read_bytes() == LEARNER
    assert there.checked_compiled(card, FORM_FP32).path.read_bytes() == FP32
    assert there.checked_compiled(card, FORM_INT8).path.read_bytes() == INT8
    artifact = there.artifact(card, "confusion_matrix")
    assert artifact is not None and artifact.read_bytes() == b"a png"
    # Imported without --no-activate only when asked: the same file again, not activated.
    again = import_bundle(there, bundle, activate=False)
    assert again.number == card.number + 1 and there.active() == card


def test_a_bundle_without_its_learner_serves_compiled_forms_only(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    original = compiled_version(here, tmp_path)
    bundle = make_bundle(here, original, tmp_path / "slim.tar", include_learner=False)
    with tarfile.open(bundle) as archive:
        assert "model.pkl" not in archive.getnames()

    card = import_bundle(there, bundle)
    assert learner_omitted(card) and card.sha256 == original.sha256
    assert not (there.version_dir(card) / "model.pkl").exists()
    with pytest.raises(IntegrityError, match="imported without its learner"):
        there.checked_model(card)
    assert there.checked_compiled(card, FORM_FP32).sha256 == sha(FP32)
    assert there.activate(card.version) == card  # checks the compiled forms instead
    # A compiled-only version moves on without a learner, never with one.
    with pytest.raises(RegistryError, match="without-learner"):
        make_bundle(there, card, tmp_path / "again.tar")
    onward = make_bundle(there, card, tmp_path / "again.tar", include_learner=False)
    assert learner_omitted(import_bundle(Registry(tmp_path / "third"), onward))


def test_a_version_without_a_compiled_form_is_not_bundled_without_its_learner(
    here: Registry, tmp_path: Path
) -> None:
    card = compiled_version(here, tmp_path, compiled=False)
    with pytest.raises(RegistryError, match="no verified compiled form"):
        make_bundle(here, card, tmp_path / "b.tar", include_learner=False)
    assert not (tmp_path / "b.tar").exists()
    assert is_bundle(make_bundle(here, card, tmp_path / "b.tar"))  # with it, it moves


def rewrite(bundle: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """`bundle` with members replaced (bytes) or removed (None), the manifest kept."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                replaced = change[member.name]
                if replaced is None:
                    continue
                data = replaced
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out


def test_a_tampered_member_is_refused_and_nothing_is_registered(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    bundle = make_bundle(here, compiled_version(here, tmp_path), tmp_path / "b.tar")
    same_size = FP32[:-1] + b"X"
    for change, reason in (
        ({"model.onnx": same_size}, "model.onnx does not match the manifest"),
        ({"model.pkl": LEARNER + b"!"}, "model.pkl has 19 bytes, the manifest says 18"),
        ({"model-int8.onnx": None}, "missing: model-int8.onnx"),
    ):
        with pytest.raises(BundleError, match=reason):
            import_bundle(there, rewrite(bundle, tmp_path / "t.tar", change))
    # A manifest rewritten to fit an altered file still has to agree with the card.
    with tarfile.open(bundle) as archive:
        manifest = json.loads(archive.extractfile(MANIFEST_NAME).read())  # type: ignore[union-attr]
    manifest["files"]["model.onnx"]["sha256"] = sha(same_size)
    forged = rewrite(
        bundle,
        tmp_path / "forged.tar",
        {MANIFEST_NAME: json.dumps(manifest).encode(), "model.onnx": same_size},
    )
    with pytest.raises(BundleError, match=r"model\.onnx does not match the card's compile record"):
        import_bundle(there, forged)
    assert there.versions() == [] and not list(there.models_dir.glob(".staging-*"))


def add(archive: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
    info.size = len(data) if info.isreg() else 0
    archive.addfile(info, io.BytesIO(data) if info.isreg() else None)


def test_path_traversal_links_and_odd_members_are_refused(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    bundle = make_bundle(here, compiled_version(here, tmp_path), tmp_path / "b.tar")
    outside = tmp_path / "here" / "evil"

    def with_extra(info: tarfile.TarInfo, data: bytes = b"x") -> Path:
        out = rewrite(bundle, tmp_path / "odd.tar", {})
        with tarfile.open(out, "a") as archive:
            add(archive, info, data)
        return out

    link = tarfile.TarInfo("model.pkl.link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "model.pkl"
    folder = tarfile.TarInfo("folder")
    folder.type = tarfile.DIRTYPE
    device = tarfile.TarInfo("null")
    device.type = tarfile.CHRTYPE
    for info, reason in (
        (tarfile.TarInfo("../evil"), "plain file names only"),
        (tarfile.TarInfo(str(outside)), "plain file names only"),
        (tarfile.TarInfo("sub/model.pkl"), "plain file names only"),
        (tarfile.TarInfo("model.pkl"), "once each"),
        (link, "not a plain file"),
        (hard, "not a plain file"),
        (folder, "not a plain file"),
        (device, "not a plain file"),
        (tarfile.TarInfo("notes.txt"), "not listed: notes.txt"),
    ):
        with pytest.raises(BundleError, match=reason):
            import_bundle(there, with_extra(info))
    assert not outside.exists() and not (tmp_path / "evil").exists()
    assert there.versions() == []


def test_what_is_not_a_bundle_is_told_apart(here: Registry, tmp_path: Path) -> None:
    pickle = tmp_path / "export.pkl"
    pickle.write_bytes(b"\x80\x04not a tar")
    plain_tar = tmp_path / "plain.tar"
    with tarfile.open(plain_tar, "w") as archive:
        add(archive, tarfile.TarInfo("card.json"), b"{}")
    assert not is_bundle(pickle) and not is_bundle(plain_tar) and not is_bundle(tmp_path)
    assert not is_bundle(tmp_path / "missing.tar")
    with pytest.raises(BundleError, match="not a readable tar archive"):
        import_bundle(here, pickle)
    with pytest.raises(BundleError, match="no manifest first"):
        import_bundle(here, plain_tar)


def test_an_empty_registry_is_seeded_once_from_a_folder_of_bundles(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    make_bundle(here, compiled_version(here, tmp_path), seed, include_learner=False)
    card = seed_registry(there, seed)
    assert card is not None and there.active() == card and learner_omitted(card)
    assert card.number == 1
    assert seed_registry(there, seed) is None  # it has a version now: left as it is
    assert len(there.versions()) == 1
    assert seed_registry(Registry(tmp_path / "none"), tmp_path / "missing") is None


def test_a_version_folder_seeds_a_registry_too(
    here: Registry, there: Registry, tmp_path: Path
) -> None:
    original = compiled_version(here, tmp_path)
    card = seed_registry(there, here.version_dir(original))
    assert card is not None and there.active() == card and not learner_omitted(card)
    assert there.checked_model(card).sha256 == original.sha256


def test_the_bundle_command_writes_a_bundle_and_refuses_clearly(
    here: Registry, tmp_path: Path
) -> None:
    original = compiled_version(here, tmp_path)
    data_dir = here.models_dir.parent
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "bundle",
            "v1",
            str(tmp_path / "v1.tar"),
            "--without-learner",
            "--data-dir",
            str(data_dir),
        ]
    )
    assert args.handler(args) == 0 and is_bundle(tmp_path / "v1.tar")
    assert args.handler(args) == 2  # the file exists now: not overwritten
    # And in a fresh interpreter, as `python -m training bundle` would run it: no torch.
    code = (
        "import sys; from training.bundle import add_commands; import argparse; "
        "p = argparse.ArgumentParser(); add_commands(p.add_subparsers()); "
        "a = p.parse_args(sys.argv[1:]); s = a.handler(a); "
        "assert 'torch' not in sys.modules and 'fastai' not in sys.modules; sys.exit(s)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "bundle",
            original.version,
            str(tmp_path / "full.tar"),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "with its learner" in done.stdout and is_bundle(tmp_path / "full.tar")
