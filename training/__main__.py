"""Command line for training-side tasks: ``python -m training <command> ...``.

Each command imports what it needs when it runs, so that light commands (such as
``export-feedback`` and ``labels``) never pay for importing torch and fastai.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.datadir import data_dir, read_environment

if TYPE_CHECKING:
    from model.registry import ModelCard, Registry

logger = logging.getLogger(__name__)

# Usage errors and refused operations; argparse uses the same code for bad arguments.
EXIT_ERROR = 2


def default_data_dir() -> Path:
    """DATA_DIR as the bot reads it: the environment over ./.env, else `data`."""
    return data_dir(read_environment())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Fit, export and manage Verdict's models."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export-feedback",
        help="write users' corrected labels as image folders plus manifest.csv",
        description=(
            "Write the disputed and confirmed images of the feedback log into OUT_DIR, one "
            "folder per label (ready for fastai's parent_label), and manifest.csv listing "
            "every verdict. OUT_DIR must be new or empty."
        ),
    )
    export.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="a new or empty folder")
    export.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the bot's data folder (default: $DATA_DIR, then DATA_DIR in .env, then ./data)",
    )
    export.add_argument(
        "--reviewed-only",
        action="store_true",
        help="export only the items an admin reviewed (/review in the bot)",
    )
    export.set_defaults(handler=_export_feedback)
    _add_fit(commands)
    _add_models(commands)
    _add_use(commands)
    _add_import(commands)
    _add_labels(commands)
    _add_compile(commands)
    from training.bundle import add_commands as add_bundle_commands

    add_bundle_commands(commands)
    return parser


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the bot's data folder (default: $DATA_DIR, then DATA_DIR in .env, then ./data)",
    )


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _learning_rate(text: str) -> float | None:
    if text.strip().lower() == "find":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'find': {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.2), not {value}")
    return value


def _image_size(text: str) -> int:
    value = _int(text)
    if not 32 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 32 and 1024 pixels, not {value}")
    return value


def _add_fit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Defaults are literals here so that `--help` stays fast; training/fit.py has the same.
    fit = commands.add_parser(
        "fit",
        help="fine-tune a new model version from a folder of images (one folder per label)",
        description=(
            "Fine-tune an ImageNet-pretrained network on PATH, which holds one folder of "
            "images per label (e.g. PATH/grizzly/*.jpg, PATH/black/*.jpg, PATH/teddy/*.jpg). "
            "Prints fastai's progress, then validation accuracy, error rate and per-label "
            "precision/recall; writes a confusion matrix and a top-losses grid; registers the "
            "result as a new model version under DATA_DIR/models and makes it active."
        ),
    )
    fit.add_argument("images_dir", metavar="PATH", type=Path, help="one sub-folder per label")
    fit.add_argument("--epochs", type=_positive_int, default=4, help="fine-tuning epochs (4)")
    fit.add_argument(
        "--freeze-epochs",
        type=_int,
        default=1,
        help="epochs with the pretrained body frozen, before fine-tuning everything (1)",
    )
    fit.add_argument(
        "--lr",
        type=_learning_rate,
        default=2e-3,
        help="learning rate, or 'find' to take lr_find's suggestion (0.002)",
    )
    fit.add_argument("--size", type=_image_size, default=224, help="image size in pixels (224)")
    fit.add_argument("--bs", type=_positive_int, default=16, help="batch size (16)")
    fit.add_argument(
        "--valid-pct", type=_fraction, default=0.2, help="share of each label validated on (0.2)"
    )
    fit.add_argument("--seed", type=_int, default=42, help="seed for the split and training (42)")
    fit.add_argument(
        "--arch",
        default="efficientnet_lite0",
        help=(
            "efficientnet_lite0 (default; its weights ship with Verdict, works offline), a "
            "torchvision name such as resnet34, or timm:NAME; other weights are downloaded once"
        ),
    )
    fit.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: $OMP_NUM_THREADS, else every core)",
    )
    fit.add_argument(
        "--no-activate",
        dest="activate",
        action="store_false",
        help="register the new version without making it the active one",
    )
    fit.add_argument(
        "--with-feedback",
        action="store_true",
        help="add the images users labelled through the bot (disputes and confirmations)",
    )
    fit.add_argument(
        "--reviewed-only",
        action="store_true",
        help=(
            "with --with-feedback: only items an admin reviewed (/review), or whose new label "
            "an admin accepted (/labels, `labels add|merge`)"
        ),
    )
    fit.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not compile the new version to ONNX (it then serves on fastai)",
    )
    _data_dir_option(fit)
    fit.set_defaults(handler=_fit)


def _add_models(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser(
        "models",
        help="list the registered model versions (the active one marked)",
        description="List the model versions under DATA_DIR/models, oldest first.",
    )
    models.add_argument("--json", action="store_true", help="print the cards as JSON")
    _data_dir_option(models)
    models.set_defaults(handler=_models)


def _add_use(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    use = commands.add_parser(
        "use",
        help="make a model version the active one",
        description=(
            "Mark VERSION active after checking its file against its card. A running bot "
            "switches on /use or when it restarts (on a Ray Serve cluster, INFERENCE_URL: "
            "within seconds)."
        ),
    )
    use.add_argument(
        "version",
        metavar="VERSION",
        help="a version id, vN (its number), 'previous' (roll back) or 'default'",
    )
    _data_dir_option(use)
    use.set_defaults(handler=_use)


def _export_feedback(args: argparse.Namespace) -> int:
    from model.feedback.export import ExportError, export_feedback

    data_dir: Path = args.data_dir or default_data_dir()
    try:
        summary = export_feedback(data_dir, args.out_dir, reviewed_only=args.reviewed_only)
    except ExportError as exc:
        print(f"export-feedback: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.describe())
    return 0


def _fit(args: argparse.Namespace) -> int:
    from model.registry import RegistryError
    from training.data import DataError
    from training.fit import FitError, FitOptions, fit

    if args.reviewed_only and not args.with_feedback:
        print("fit: --reviewed-only needs --with-feedback", file=sys.stderr)
        return EXIT_ERROR
    if args.freeze_epochs < 0:
        print("fit: --freeze-epochs must be 0 or more", file=sys.stderr)
        return EXIT_ERROR
    options = FitOptions(
        images_dir=args.images_dir,
        data_dir=args.data_dir or default_data_dir(),
        epochs=args.epochs,
        freeze_epochs=args.freeze_epochs,
        lr=args.lr,
        size=args.size,
        bs=args.bs,
        valid_pct=args.valid_pct,
        seed=args.seed,
        arch=args.arch,
        threads=args.threads,
        activate=args.activate,
        with_feedback=args.with_feedback,
        reviewed_only=args.reviewed_only,
        compile=args.compile,
    )
    # SIGTERM (the bot's "/retrain cancel", `docker stop`) unwinds like Ctrl-C, so that the
    # working folder and any half-staged version are removed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        fit(options)
    except (DataError, FitError, RegistryError) as exc:
        print(f"fit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fit: stopped before it finished", file=sys.stderr)
        return 130
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _registry(args: argparse.Namespace) -> Registry:
    from model.registry import Registry

    data_dir: Path = args.data_dir or default_data_dir()
    return Registry(data_dir / "models")


def _models(args: argparse.Namespace) -> int:
    import json

    from model.registry import RegistryError
    from training.fit import ensure_default_registered

    registry = _registry(args)
    try:
        # Registers an existing export of the bundled default; never imports torch.
        ensure_default_registered(registry, export=False)
        versions = registry.versions()
        active = registry.active()
    except RegistryError as exc:
        print(f"models: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps([card.to_json() for card in versions], indent=2))
        return 0
    if not versions:
        print(
            f"No model versions in {registry.models_dir} yet. `python -m training fit PATH` "
            "registers the bundled default and a new version."
        )
        return 0
    compiled = {card.version: _compiled_lines(card) for card in versions}
    rows = [("", "VERSION", "ARCHITECTURE", "LABELS", "ACCURACY", "IMAGES", "CREATED (UTC)")]
    for card in versions:
        accuracy = (card.metrics or {}).get("accuracy")
        rows.append(
            (
                "*" if active is not None and card.version == active.version else "",
                card.version,
                card.architecture,
                str(len(card.labels)),
                f"{accuracy:.1%}" if isinstance(accuracy, float) else "–",
                str(card.training_images) if card.training_images is not None else "–",
                card.created.replace("T", " ")[:16]
                + ("  (bundled ImageNet default)" if card.is_default else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), end=""
        )
        print("  " + row[-1])
        if row[1] in compiled:
            for line in compiled[row[1]]:
                print(f"    {line}")
    print(f"* active. Switch with `python -m training use VERSION` ({registry.models_dir}).")
    return 0


def _compiled_lines(card: ModelCard) -> list[str]:
    from model.compiled import describe

    return describe(card.compile_record)


def _use(args: argparse.Namespace) -> int:
    from model.registry import RegistryError
    from training.fit import ensure_default_registered

    registry = _registry(args)
    try:
        ensure_default_registered(registry, export=args.version == "default")
        card = registry.activate(registry.get(args.version))
    except RegistryError as exc:
        print(f"use: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"{card.version} is now active ({card.architecture}, {len(card.labels)} labels). "
        f"A running bot switches on /use {card.version} or when it restarts."
    )
    return 0


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imported = commands.add_parser(
        "import",
        help="register a learner exported elsewhere (learn.export() in a notebook)",
        description=(
            "Load FILE once in a separate process to check it and summarise it (architecture, "
            "labels, input size, what had to be patched), then register it as a new model "
            "version with its sha256 and make it active (as fit does). Unpickling runs code "
            "from the file: import only files you trust."
        ),
    )
    imported.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="an export.pkl, or a bundle made by `python -m training bundle`",
    )
    imported.add_argument(
        "--activate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="make it the active version (the default); --no-activate only registers it",
    )
    imported.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not compile it to ONNX (it then serves on fastai until `compile`)",
    )
    _data_dir_option(imported)
    imported.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    from model.registry import RegistryError
    from model.serving import fastai_available
    from training.bundle import is_bundle, run_import_bundle

    if is_bundle(args.file):
        return run_import_bundle(args.file, args.data_dir, activate=args.activate)
    if not fastai_available():
        print(
            "import: importing a learner (export.pkl) needs the full image (fastai and torch); "
            "this one serves compiled versions only. In a full install run "
            "`python -m training import export.pkl`, then "
            "`python -m training bundle VERSION FILE`, and here `python -m training import FILE` "
            "(every file's sha256 is checked).",
            file=sys.stderr,
        )
        return 2
    from training.importer import ImportFailed, describe, import_learner

    try:
        card = import_learner(
            args.file, _registry(args), activate=args.activate, compile=args.compile, out=print
        )
    except (ImportFailed, RegistryError) as exc:
        print(f"import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(describe(card))
    if args.activate:
        print(
            f"{card.version} is now active: a running bot switches on /use {card.version} or "
            "when it restarts."
        )
    else:
        print(
            f"{card.version} is registered but not active; switch to it with "
            f"`python -m training use {card.version}` (a running bot: /use {card.version})."
        )
    return 0


def _add_labels(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    labels = commands.add_parser(
        "labels",
        help="new labels users typed: list them, add, merge or reject them (like /labels)",
        description=(
            "List the labels users typed as corrections that the active model does not know, "
            "grouped by spelling (case, spaces and Unicode forms ignored; close spellings "
            "named), with their photos and users; or decide about one. An added label becomes "
            "a class at the next `fit --with-feedback` (and /retrain); a merged one trains as "
            "the label it is merged into; a rejected one stays in the log and is never trained."
        ),
    )
    labels.add_argument("--json", action="store_true", help="print the proposals as JSON")
    _data_dir_option(labels)
    labels.set_defaults(handler=_labels, action=None)
    actions = labels.add_subparsers(dest="action", metavar="ACTION")
    for name, summary in (
        ("add", "make LABEL a class of its own"),
        ("reject", "keep LABEL's corrections out of training (they stay in the log)"),
        ("undo", "take back the decision on LABEL (it waits for a decision again)"),
    ):
        action = actions.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        action.add_argument("label", metavar="LABEL", help="as users typed it (any case)")
        action.add_argument(
            "--data-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    merge = actions.add_parser(
        "merge",
        help="train LABEL's corrections as INTO (a typo or a synonym)",
        description="Train LABEL's corrections as INTO, e.g. `labels merge gras grass`.",
    )
    merge.add_argument("label", metavar="LABEL", help="as users typed it (any case)")
    merge.add_argument("into", metavar="INTO", help="the label to train them as")
    merge.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _labels(args: argparse.Namespace) -> int:
    from training.labels import run_labels

    data_dir: Path = args.data_dir or default_data_dir()
    return run_labels(
        data_dir,
        _registry(args),
        action=args.action,
        label=getattr(args, "label", None),
        into=getattr(args, "into", None),
        as_json=args.json,
    )


def _add_compile(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compiled = commands.add_parser(
        "compile",
        help="compile a model version to ONNX (and int8), verified against its learner",
        description=(
            "Export VERSION's learner to ONNX, check that it answers as the learner does on "
            "sample images (and the labelled images of --images), measure it, and with "
            "--calibrate make an int8 form, kept only when its accuracy holds on --images. "
            "The result is written on the version's card, also when it does not compile."
        ),
    )
    compiled.add_argument(
        "version",
        metavar="VERSION",
        help="a version id, vN, 'active', 'previous' or 'default' (registered if need be)",
    )
    compiled.add_argument(
        "--calibrate",
        metavar="FOLDER",
        type=Path,
        default=None,
        help="images like the ones the bot sees, to calibrate the int8 form",
    )
    compiled.add_argument(
        "--images",
        metavar="FOLDER",
        type=Path,
        default=None,
        help="labelled images (one sub-folder per label) to check accuracy on",
    )
    compiled.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        type=Path,
        default=None,
        help="the bot's data folder (default: $DATA_DIR, then DATA_DIR in .env, then ./data)",
    )
    compiled.set_defaults(handler=_compile)


def _compile(args: argparse.Namespace) -> int:
    from model.registry import RegistryError
    from training.compile import compile_version
    from training.fit import ensure_default_registered

    for option in ("calibrate", "images"):
        folder = getattr(args, option)
        if folder is not None and not folder.is_dir():
            print(f"compile: --{option} {folder} is not a folder", file=sys.stderr)
            return EXIT_ERROR
    registry = _registry(args)
    try:
        # `compile default` exports and registers the bundled default first when needed,
        # which compiles it: then only a second pass with images is still worth making.
        wanted_default = args.version == "default"
        fresh = wanted_default and registry.default() is None
        ensure_default_registered(registry, export=wanted_default, out=print)
        if fresh and args.calibrate is None and args.images is None:
            card = registry.get("default")
        else:
            card = compile_version(
                registry, args.version, calibrate=args.calibrate, images=args.images, out=print
            )
    except RegistryError as exc:
        print(f"compile: {exc}", file=sys.stderr)
        return EXIT_ERROR
    record = card.compile_record
    if record is None or not record.ok:
        print(f"{card.version} serves on fastai: {record.reason if record else 'not compiled'}")
    else:
        print(f"Recorded on {card.version}'s card ({registry.version_dir(card) / 'card.json'}).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
