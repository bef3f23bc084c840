"""Runs `python -m bot`'s main() and, once it has returned, writes the modules it had imported.

The end-to-end tests start the bot through this script so that they can check, after real
photos went through, that the bot process never imported torch or fastai.
"""

from __future__ import annotations

import json
import sys

from bot.__main__ import main

if __name__ == "__main__":  # spawned workers re-import this file as __mp_main__
    status = main()
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(sorted(sys.modules), handle)
    sys.exit(status)
