"""Model versions carried between installs: reading bundles, and seeding an empty registry.

A bundle is one uncompressed tar archive of a version, made in a full install by
`python -m training bundle VERSION FILE` (training/bundle.py writes it)::

    verdict-bundle.json     the manifest, always the first member: the version it was made
                            from, whether the learner is in it, and every other member's
                            sha256 and size
    card.json               the version's card as it was there
    model.onnx ...          the compiled forms the card's compile record lists
    model.pkl               the learner, unless it was left out (`--without-learner`)
    confusion_matrix.png    the artifacts the card lists, when they were there

Members are plain files with plain names only. `import_bundle` checks everything before it
registers anything, and registers the version as a new one of this registry. The slim image
carries the compiled default as a bundle; at start the bot calls `seed_registry` with the
folder `VERDICT_SEED_MODELS` names, which imports it when the registry is still empty.

Nothing here imports torch, fastai or onnxruntime, and nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from model.cards import CARD_NAME, ModelCard, RegistryError
from model.compiled import CompiledFormError, CompileRecord
from model.files import CHUNK_BYTES
from model.registry import Registry, model_files

logger = logging.getLogger(__name__)

MANIFEST_NAME = "verdict-bundle.json"
BUNDLE_FORMAT = "verdict-model-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".tar"
MAX_SMALL_BYTES = 4 << 20  # the manifest and the card
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(RegistryError):
    """A bundle is unreadable, malformed or altered; the message says why. Nothing of it was
    registered."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a bundle's manifest says."""

    version: str  # the version it was made from
    bundled_at: str
    learner: bool  # whether the learner is in the bundle
    files: dict[str, tuple[str, int]]  # member name → (sha256, size), the manifest aside

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "version": self.version,
            "bundled_at": self.bundled_at,
            "learner": self.learner,
            "files": {
                name: {"sha256": sha, "size": size} for name, (sha, size) in self.files.items()
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Read a manifest strictly; `BundleError` says what is wrong."""
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError("it is not a Verdict model bundle (no bundle manifest)")
        if data.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"bundle format {data.get('format_version')!r} is not one this release reads "
                f"({BUNDLE_FORMAT_VERSION})"
            )
        version, bundled_at, learner = (data.get(k) for k in ("version", "bundled_at", "learner"))
        listed = data.get("files")
        if not (
            isinstance(version, str)
            and isinstance(bundled_at, str)
            and isinstance(learner, bool)
            and isinstance(listed, dict)
        ):
            raise BundleError("the bundle's manifest is malformed")
        files = {}
        for name, entry in listed.items():
            if not _plain_name(name) or name == MANIFEST_NAME:
                raise BundleError(f"the manifest lists an unusable file name {name!r}")
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            if (
                not isinstance(sha, str)
                or not _SHA256.match(sha)
                or not isinstance(size, int)
                or isinstance(size, bool)
                or size < 0
            ):
                raise BundleError(f"the manifest's entry for {name} is malformed")
            files[name] = (sha, size)
        if CARD_NAME not in files:
            raise BundleError(f"the bundle has no {CARD_NAME}")
        return cls(version, bundled_at, learner, files)


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(_MEMBER_NAME.match(name)) and ".." not in name


def is_bundle(path: Path) -> bool:
    """Whether `path` is a tar archive whose first member is a bundle manifest (a cheap test
    for `training import FILE`: an export.pkl is not; `import_bundle` checks the rest)."""
    try:
        if not Path(path).is_file() or not tarfile.is_tarfile(path):
            return False
        with tarfile.open(path, "r:") as archive:
            first = archive.next()
    except (OSError, tarfile.TarError):
        return False
    return first is not None and first.name == MANIFEST_NAME and first.isreg()


def import_bundle(registry: Registry, path: Path, *, activate: bool = True) -> ModelCard:
    """Check the bundle at `path` and register its version as a new version of `registry`
    (made active unless `activate` is False); the new card.

    Refused with `BundleError` (and nothing registered) when a member is not a plain file
    with a plain name (links, folders, paths such as ``../x`` or ``/etc/x``), is not in the
    manifest or appears twice, when a file's size or sha256 differs from the manifest, when
    the learner's or a compiled form's sha256 differs from the card, or when a bundle without
    its learner has no verified compiled form.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="verdict-bundle-") as folder:
        manifest, card, files = _unpack(path, Path(folder))
        return registry.register_bundle(
            card,
            files,
            provenance={
                "bundle": path.name,
                "bundled_at": manifest.bundled_at,
                "learner": manifest.learner,
            },
            activate=activate,
        )


def _unpack(path: Path, into: Path) -> tuple[Manifest, ModelCard, dict[str, Path]]:
    """Every member of the bundle checked and written into `into`: the manifest, the card and
    the version's files (name → path), the card's own file aside."""
    try:
        archive = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        raise BundleError(f"no such file: {path}") from None
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{path.name} is not a readable tar archive: {exc}") from None
    with archive:
        try:
            members = archive.getmembers()
        except tarfile.TarError as exc:
            raise BundleError(f"{path.name} is damaged: {exc}") from None
        seen: set[str] = set()
        for member in members:
            if not _plain_name(member.name) or member.name in seen:
                raise BundleError(
                    f"{path.name} holds {member.name!r}: a bundle holds plain file names only, "
                    "once each"
                )
            if not member.isreg():
                raise BundleError(f"{path.name}: {member.name!r} is not a plain file")
            seen.add(member.name)
        if not members or members[0].name != MANIFEST_NAME:
            raise BundleError(f"{path.name} is not a Verdict model bundle (no manifest first)")
        if members[0].size > MAX_SMALL_BYTES:
            raise BundleError(f"{path.name}: the manifest is too large")
        manifest = Manifest.from_json(_json(_read(archive, members[0]), MANIFEST_NAME))
        present = {member.name for member in members[1:]}
        if present != set(manifest.files):
            odd = sorted(present - set(manifest.files))
            gone = sorted(set(manifest.files) - present)
            raise BundleError(
                f"{path.name} does not hold what its manifest lists"
                + (f"; not listed: {', '.join(odd)}" if odd else "")
                + (f"; missing: {', '.join(gone)}" if gone else "")
            )
        files: dict[str, Path] = {}
        for member in members[1:]:
            sha, size = manifest.files[member.name]
            if member.size != size:
                raise BundleError(
                    f"{path.name}: {member.name} has {member.size} bytes, the manifest says {size}"
                )
            target = into / member.name
            source = archive.extractfile(member)
            if source is None:
                raise BundleError(f"{path.name}: {member.name} cannot be read")
            with source, target.open("xb") as writer:
                digest = _copy_hashed(source, writer)
            if digest != sha:
                raise BundleError(
                    f"{path.name}: {member.name} does not match the manifest (sha256 "
                    f"{digest[:12]}…, manifest says {sha[:12]}…); nothing was registered"
                )
            files[member.name] = target
    card_path = files.pop(CARD_NAME)
    if card_path.stat().st_size > MAX_SMALL_BYTES:
        raise BundleError(f"{path.name}: the card is too large")
    try:
        card = ModelCard.from_json(_json(card_path.read_bytes(), CARD_NAME))
    except RegistryError as exc:
        raise BundleError(f"{path.name}: its card is unreadable: {exc}") from None
    _check_against_card(path.name, manifest, card, files)
    return manifest, card, files


def _check_against_card(
    name: str, manifest: Manifest, card: ModelCard, files: Mapping[str, Path]
) -> None:
    """The bundle's files are the ones the card describes (BundleError otherwise)."""
    if manifest.version != card.version:
        raise BundleError(
            f"{name}: the manifest names {manifest.version}, the card {card.version}"
        )
    if manifest.learner != (card.file in files):
        raise BundleError(f"{name}: the manifest and the files disagree about the learner")
    if card.file in files and manifest.files[card.file][0] != card.sha256:
        raise BundleError(f"{name}: the learner {card.file} does not match its card's sha256")
    record = None
    if card.compiled is not None:
        try:
            record = CompileRecord.from_json(card.compiled)
        except CompiledFormError as exc:
            raise BundleError(f"{name}: the card's compile record is malformed: {exc}") from None
    forms = record.forms if record is not None else {}
    for form in forms.values():
        if form.file not in files:
            raise BundleError(f"{name}: the compiled file {form.file} is missing")
        if manifest.files[form.file][0] != form.sha256:
            raise BundleError(f"{name}: {form.file} does not match the card's compile record")
    if not manifest.learner and (record is None or not record.ok):
        raise BundleError(
            f"{name} has no learner and no verified compiled form: nothing could serve it"
        )
    known = {card.file, *(form.file for form in forms.values()), *card.artifacts.values()}
    odd = sorted(set(files) - known)
    if odd:
        raise BundleError(f"{name} holds files its card does not name: {', '.join(odd)}")


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    reader = archive.extractfile(member)
    if reader is None:
        raise BundleError(f"{member.name} cannot be read")
    with reader:
        return reader.read(MAX_SMALL_BYTES + 1)


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"the bundle's {what} is not JSON: {exc}") from None


def _copy_hashed(source: IO[bytes], writer: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        writer.write(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- seeding


def seed_registry(registry: Registry, seed_dir: Path) -> ModelCard | None:
    """When `registry` has no versions, register what `seed_dir` holds and activate it; the
    active card, or None when the registry had versions or `seed_dir` holds nothing.

    `seed_dir` is a bundle, a folder of bundles (``*.tar``: each imported, in name order, the
    last one active), or a version folder (its ``card.json`` and files, e.g. one copied out of
    a registry). `RegistryError` (`BundleError`) when what it holds is refused.
    """
    seed_dir = Path(seed_dir)
    if registry.versions():
        return None
    if seed_dir.is_file():
        bundles = [seed_dir]
    elif (seed_dir / CARD_NAME).is_file():
        return _seed_version_folder(registry, seed_dir)
    elif seed_dir.is_dir():
        bundles = sorted(
            p for p in seed_dir.iterdir() if p.suffix == BUNDLE_SUFFIX and is_bundle(p)
        )
    else:
        logger.warning("%s does not exist: no model to seed the registry with", seed_dir)
        return None
    if not bundles:
        logger.warning("no model bundle in %s to seed the registry with", seed_dir)
        return None
    card = None
    for index, bundle in enumerate(bundles):
        card = import_bundle(registry, bundle, activate=index == len(bundles) - 1)
        logger.info("seeded %s from %s", card.version, bundle)
    return card


def _seed_version_folder(registry: Registry, folder: Path) -> ModelCard:
    """Register a version folder (its card and the files it names) and activate it; the
    registry checks the learner's and the compiled forms' sha256 on its own copies."""
    try:
        data = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{folder / CARD_NAME} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{folder / CARD_NAME} is not a JSON object")
    card = ModelCard.from_json(data)
    names = model_files(card) | set(card.artifacts.values())
    files = {name: folder / name for name in names if (folder / name).is_file()}
    return registry.register_bundle(
        card, files, provenance={"seed_folder": str(folder)}, activate=True
    )
