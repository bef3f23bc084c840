"""Run the sandbox alone: ``python -m sandbox --port 8088 --token 123456:SANDBOX``.

It serves the stand-in Bot API, the test API and the chat page until Ctrl+C or SIGTERM, and
prints how to point a bot at it. The token never appears in what it prints or logs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bot.logs import RedactFilter
from sandbox.server import Sandbox

logger = logging.getLogger(__name__)


async def serve(token: str, host: str, port: int, admin_id: int | None = None) -> None:
    """Run a sandbox until SIGINT (Ctrl+C) or SIGTERM."""
    sandbox = Sandbox(token, page_admin_id=admin_id)
    url = await sandbox.start(host, port)
    admins = f"ADMIN_IDS={admin_id} " if admin_id is not None else ""
    print(
        f"Sandbox Bot API: {url}/bot<token>/  test API: {url}/_sandbox/  chat page: {url}/\n"
        "Point a bot at it (the token is the one given with --token):\n"
        f"  TELEGRAM_API_URL={url} TELEGRAM_TOKEN=<token> {admins}python -m bot",
        flush=True,
    )
    # The loop's own signal handlers (a wakeup fd), not Python's default SIGINT handling: a
    # signal that lands on another thread (the executor's, after getaddrinfo) must still wake
    # a loop that waits with no timer, or Ctrl+C would go unnoticed until the next request.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        logger.info("sandbox: interrupted")
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until Ctrl+C."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="Local stand-in for the Telegram Bot API."
    )
    parser.add_argument("--token", default="123456:SANDBOX-TOKEN")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument(
        "--admin-id", type=int, default=None, help="user id the chat page plays as admin"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Whatever logs (the sandbox, aiohttp, a library), its lines reach stderr without the token.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactFilter([args.token]))
    try:
        asyncio.run(serve(args.token, args.host, args.port, args.admin_id))
    except KeyboardInterrupt:
        logger.info("sandbox: interrupted")


if __name__ == "__main__":
    main()
