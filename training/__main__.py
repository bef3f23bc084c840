"""Command line for training-side tasks: ``python -m training <command> ...``.

Each command imports what it needs when it runs, so that light commands (such as
``export-feedback``) never pay for importing torch and fastai.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values

logger = logging.getLogger(__name__)

# Usage errors and refused operations; argparse uses the same code for bad arguments.
EXIT_ERROR = 2


def default_data_dir() -> Path:
    """DATA_DIR from the environment, else from ./.env, else `data` (as the bot reads it)."""
    value = os.environ.get("DATA_DIR", "").strip()
    env_file = Path(".env")
    if not value and env_file.is_file():
        value = (dotenv_values(env_file).get("DATA_DIR") or "").strip()
    return Path(value or "data")


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
    export.set_defaults(handler=_export_feedback)
    return parser


def _export_feedback(args: argparse.Namespace) -> int:
    from training.export import ExportError, export_feedback

    data_dir: Path = args.data_dir or default_data_dir()
    try:
        summary = export_feedback(data_dir, args.out_dir)
    except ExportError as exc:
        print(f"export-feedback: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.describe())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
