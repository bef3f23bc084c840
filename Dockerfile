# Verdict: the bot and its model workers in one image.
#   CPU (default):   docker build -t verdict .
#   GPU:             docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t verdict:gpu .
#                    (PyPI's torch is the CUDA build)
#   Another base:    docker build --build-arg BASE_IMAGE=verdict-base:bookworm -t verdict .
#                    (any Debian-like image with python3 ≥ 3.11 and its venv module; see
#                    scripts/compose-check.sh, which makes one where Docker Hub is out of reach)
ARG BASE_IMAGE=python:3.11-slim

# The dependency list alone, read out of pyproject.toml: edits elsewhere in pyproject.toml, in
# README.md or in the sources leave the dependency layer below cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies']))" > /requirements.txt

FROM ${BASE_IMAGE}

# CPU-only torch wheels by default: PyPI's build carries CUDA (several GB).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# PATH spelled out: a base made with `docker import` has no PATH of its own.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DATA_DIR=/data \
    HTTP_HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# Dependencies in their own layer, at the exact versions of constraints.txt (the ones the
# benchmarks were measured on): rebuilt only when the dependency list or the pins change.
COPY constraints.txt ./
COPY --from=requirements /requirements.txt ./
RUN python3 -m venv /opt/venv \
 && pip install -c constraints.txt --upgrade pip setuptools \
 && pip install -c constraints.txt --index-url "${TORCH_INDEX}" torch torchvision \
 && pip install -c constraints.txt -r requirements.txt

# Not sandbox/ (the local stand-in for Telegram, for development; .dockerignore leaves it out
# too): without a bot token this image refuses to start rather than serve a sandbox.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
COPY training ./training
RUN pip install --no-deps --no-build-isolation . \
 && useradd --create-home --uid 10001 verdict \
 && mkdir -p /data \
 && chown verdict:verdict /data

# Runs as a normal user; everything it writes goes to the /data volume. No secrets baked in:
# the token comes from the environment (docker compose's env_file) at run time.
USER verdict
VOLUME ["/data"]
EXPOSE 8080

# bot.healthcheck asks /healthz on the port the bot reads from PORT.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-m", "bot.healthcheck"]

# SIGTERM (docker stop) lets the bot answer what is queued and exit 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
