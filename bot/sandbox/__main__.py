"""Run the sandbox alone: ``python -m bot.sandbox --port 8088 --token 123456:SANDBOX``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from bot.sandbox.server import Sandbox

logger = logging.getLogger(__name__)


async def serve(token: str, host: str, port: int) -> None:
    """Run a sandbox until cancelled."""
    sandbox = Sandbox(token)
    url = await sandbox.start(host, port)
    print(f"Sandbox Bot API: {url}/bot<token>/  test API: {url}/_sandbox/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until Ctrl+C."""
    parser = argparse.ArgumentParser(description="Local stand-in for the Telegram Bot API.")
    parser.add_argument("--token", default="123456:SANDBOX-TOKEN")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.token, args.host, args.port))
    except KeyboardInterrupt:
        logger.info("sandbox: interrupted")


if __name__ == "__main__":
    main()
