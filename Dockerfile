# syntax=docker/dockerfile:1
# Verdict: the bot and its model workers in one small image.
#   CPU (default):  docker build -t verdict .
#   GPU (CUDA 12.4): docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t verdict:gpu .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# CPU-only torch wheels by default: the CUDA build from PyPI is several GB.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    HTTP_HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# Dependencies in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN pip install --index-url "${TORCH_INDEX}" torch torchvision \
 && mkdir -p bot model training \
 && touch bot/__init__.py model/__init__.py training/__init__.py \
 && pip install . \
 && pip uninstall -y verdict \
 && rm -rf bot model training

# Not sandbox/ (the local stand-in for Telegram, for development; .dockerignore leaves it out
# too): without a bot token this image refuses to start rather than serve a sandbox.
COPY bot ./bot
COPY model ./model
COPY training ./training
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 verdict \
 && mkdir -p /data \
 && chown verdict:verdict /data

# Runs as a normal user; everything it writes goes to the /data volume. No secrets baked in:
# the token comes from the environment (docker compose's env_file) at run time.
USER verdict
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

# SIGTERM (docker stop) lets the bot answer what is queued and exit 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
