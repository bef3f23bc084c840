"""`python -m bot.healthcheck`: exit 0 when the bot's /healthz answers, 1 otherwise.

Docker's HEALTHCHECK (Dockerfile and docker-compose.yml) runs it. It reads PORT and HTTP_HOST
the way the bot does, so moving the port is one setting, not three.
"""

from __future__ import annotations

import sys
import urllib.request

from bot.config import ConfigError, Settings, load_settings

TIMEOUT_S = 4.0
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def healthz_url(settings: Settings) -> str:
    """Where the bot's /healthz answers: its own address, or loopback when it binds all."""
    host = settings.http_host
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


def main() -> int:
    """Ask /healthz once; the exit status Docker reads."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"unhealthy: the settings do not load: {exc}", file=sys.stderr)
        return 1
    if settings.port == 0:
        print("unhealthy: PORT=0 picks a random port; the health check cannot know it")
        return 1
    url = healthz_url(settings)
    # No proxy from the environment: this is a call to the process next door.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
