"""`python -m training bundle VERSION OUT`: one file that carries a model version to another
install (the slim image, another server), where `python -m training import FILE` registers it.

The format and the reading side (checks, registering) are in model/seed.py, which the bot's
start also uses; this module writes bundles. No torch or fastai here: it runs in the slim
image too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from model.cards import CARD_NAME, ModelCard, RegistryError
from model.files import CHUNK_BYTES, sha256_file
from model.registry import Registry, learner_omitted
from model.seed import (
    BUNDLE_SUFFIX,
    MANIFEST_NAME,
    BundleError,
    Manifest,
    import_bundle,
    is_bundle,
)

__all__ = ["BundleError", "add_commands", "import_bundle", "is_bundle", "make_bundle"]

EXIT_ERROR = 2


def make_bundle(
    registry: Registry, version: ModelCard | str, out: Path, *, include_learner: bool = True
) -> Path:
    """Write `version` of `registry` as one bundle at `out` (a new file, or a folder to put
    ``<version>.tar`` in); its path.

    It holds the card, the compiled forms, the artifacts the card lists and, unless
    `include_learner` is False, the learner. Every file is checked against the card first
    and hashed again as it is written: a file changed meanwhile fails the bundle, which is
    then removed.
    """
    card = registry.get(version) if isinstance(version, str) else version
    folder = registry.version_dir(card)
    card = registry.get(card.version)  # as it is on disk now
    record = card.compile_record
    files: dict[str, tuple[Path, str]] = {}  # member name → (file, sha256 it must have)
    if include_learner:
        if learner_omitted(card):
            raise RegistryError(
                f"{card.version} was imported without its learner: bundle it without one "
                "(--without-learner)"
            )
        checked = registry.checked_model(card)
        files[card.file] = (checked.path, checked.sha256)
    elif record is None or not record.ok:
        raise RegistryError(
            f"{card.version} has no verified compiled form: without its learner the bundle "
            f"could not be served. Compile it first (python -m training compile {card.version})"
        )
    for kind in record.forms if record is not None else {}:
        checked = registry.checked_compiled(card, kind)
        files[checked.path.name] = (checked.path, checked.sha256)
    for kind in card.artifacts:
        artifact = registry.artifact(card, kind)
        if artifact is not None and artifact.name not in files:
            files[artifact.name] = (artifact, sha256_file(artifact))
    card_bytes = (folder / CARD_NAME).read_bytes()
    manifest = Manifest(
        version=card.version,
        bundled_at=datetime.now(UTC).isoformat(timespec="seconds"),
        learner=include_learner,
        files={
            CARD_NAME: (hashlib.sha256(card_bytes).hexdigest(), len(card_bytes)),
            **{name: (sha, path.stat().st_size) for name, (path, sha) in files.items()},
        },
    )
    target = Path(out)
    if target.is_dir():
        target = target / f"{card.version}{BUNDLE_SUFFIX}"
    if target.exists():
        raise RegistryError(f"{target} exists already; give a new file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staged_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    staged = Path(staged_name)
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w:") as archive:
            manifest_bytes = (json.dumps(manifest.to_json(), indent=2) + "\n").encode()
            _add(archive, MANIFEST_NAME, io.BytesIO(manifest_bytes), len(manifest_bytes))
            _add(archive, CARD_NAME, io.BytesIO(card_bytes), len(card_bytes))
            for name, (path, sha) in files.items():
                size = manifest.files[name][1]
                with path.open("rb") as reader:
                    hashing = _Hashing(reader)
                    _add(archive, name, cast(IO[bytes], hashing), size)
                if hashing.digest.hexdigest() != sha or hashing.read_bytes != size:
                    raise RegistryError(f"{path} changed while it was bundled; try again")
            raw.flush()
            os.fsync(raw.fileno())
        staged.chmod(0o644)
        os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    return target


def _add(archive: tarfile.TarFile, name: str, reader: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(datetime.now(UTC).timestamp())
    archive.addfile(info, reader)


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, reader: IO[bytes]) -> None:
        self._reader = reader
        self.digest = hashlib.sha256()
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._reader.read(size if size >= 0 else CHUNK_BYTES)
        self.digest.update(chunk)
        self.read_bytes += len(chunk)
        return chunk


# ----------------------------------------------------------------------------- the command


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bundle` to `python -m training`'s commands (training/__main__.py)."""
    bundle = commands.add_parser(
        "bundle",
        help="write a model version as one file, for `training import` in another install",
        description=(
            "Write VERSION (its card, compiled ONNX forms, artifacts and learner) as one tar "
            "file at OUT (a new file, or a folder for VERSION.tar), with a manifest of every "
            "file's sha256. `python -m training import FILE` registers it elsewhere as a new "
            "version, after checking every file. --without-learner leaves model.pkl out: the "
            "version then serves only in its compiled form (the slim image), and cannot be "
            "fitted on there."
        ),
    )
    bundle.add_argument(
        "version", metavar="VERSION", help="a version id, vN, 'active', 'previous' or 'default'"
    )
    bundle.add_argument("out", metavar="OUT", type=Path, help="the bundle file to write")
    bundle.add_argument(
        "--without-learner",
        action="store_true",
        help="leave the learner (model.pkl) out: compiled forms only (needs a compiled version)",
    )
    bundle.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the bot's data folder (default: $DATA_DIR, then DATA_DIR in .env, then ./data)",
    )
    bundle.set_defaults(handler=run_bundle)


def _registry(data_dir: Path | None) -> Registry:
    from model.datadir import data_dir as read_data_dir
    from model.datadir import read_environment

    return Registry((data_dir or read_data_dir(read_environment())) / "models")


def run_bundle(args: argparse.Namespace) -> int:
    """`python -m training bundle VERSION OUT [--without-learner]`."""
    registry = _registry(args.data_dir)
    try:
        card = registry.get(args.version)
        path = make_bundle(registry, card, args.out, include_learner=not args.without_learner)
    except (RegistryError, OSError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return EXIT_ERROR
    what = (
        "without its learner (compiled forms only)" if args.without_learner else "with its learner"
    )
    print(f"bundled {card.version} {what}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_import_bundle(path: Path, data_dir: Path | None, *, activate: bool = True) -> int:
    """What `python -m training import FILE` runs when `is_bundle(FILE)`."""
    registry = _registry(data_dir)
    try:
        card = import_bundle(registry, path, activate=activate)
    except (RegistryError, OSError) as exc:
        print(f"import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    origin = card.extra.get("imported", {}).get("from_version", "?")
    learner = ", compiled forms only" if learner_omitted(card) else ""
    print(
        f"imported {card.version} from the bundle of {origin}: {card.architecture}, "
        f"{len(card.labels)} labels{learner}"
    )
    if activate:
        print(f"{card.version} is now active: a running bot switches on /use {card.version}.")
    else:
        print(
            f"{card.version} is registered; switch with `python -m training use {card.version}`."
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m training.bundle VERSION OUT [--without-learner]`: the `bundle` command on its
    own (the image build runs it so)."""
    parser = argparse.ArgumentParser(prog="python -m training")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bundle", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
