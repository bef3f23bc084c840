# Verdict: the bot and its model workers in one image (full, slim), or a node of a Ray Serve
# cluster that classifies for the bot (cluster). Three targets:
#   full (default):  docker build -t verdict .
#                    everything: fit, import, compile, and serve on fastai or ONNX (about 2 GB
#                    with CPU torch, 6.6 GB with PyPI's)
#   slim:            docker build --target slim -t verdict:slim .
#                    serves compiled (ONNX) versions only: no torch, no fastai (under 500 MB);
#                    carries the bundled default, compiled at build time, and registers it at
#                    its first start. Other versions come as bundles made in a full install
#                    (`python -m training bundle VERSION FILE`, then `training import FILE`).
#   cluster:         docker build --target cluster -t verdict:cluster .
#                    a Ray head or worker node for classifying on a Ray Serve cluster: the slim
#                    image's serving dependencies plus the `cluster` extra (ray[serve]), model/
#                    and deploy/; no torch, so its replicas serve compiled versions only. Runs
#                    deploy/ray-node.sh (docker-compose.yml's `cluster` profile).
#   GPU:             docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t verdict:gpu .
#                    (PyPI's torch is the CUDA build)
#   Another base:    docker build --build-arg BASE_IMAGE=verdict-base:bookworm -t verdict .
#                    (any Debian-like image with python3 ≥ 3.11 and its venv module; see
#                    scripts/compose-check.sh, which makes one where Docker Hub is out of reach)
ARG BASE_IMAGE=python:3.11-slim

# The dependency lists alone, read out of pyproject.toml: edits elsewhere in pyproject.toml, in
# README.md or in the sources leave the dependency layers below cached. requirements.txt is
# what serving a compiled version needs; requirements-train.txt the `train` extra;
# requirements-cluster.txt the `cluster` extra (the Ray nodes).
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies']))" > /requirements.txt \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['project']['optional-dependencies']['train']))" > /requirements-train.txt \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['project']['optional-dependencies']['cluster']))" > /requirements-cluster.txt

# What every target shares: the environment, the user and the data folder.
FROM ${BASE_IMAGE} AS runtime
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
RUN useradd --create-home --uid 10001 verdict \
 && mkdir -p /data \
 && chown verdict:verdict /data

# ----------------------------------------------------------------------------- full

FROM runtime AS full-install

# CPU-only torch wheels by default: PyPI's build carries CUDA (several GB).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# Dependencies in their own layer, at the exact versions of constraints.txt (the ones the
# benchmarks were measured on): rebuilt only when the dependency lists or the pins change.
COPY constraints.txt ./
COPY --from=requirements /requirements.txt /requirements-train.txt ./
RUN python3 -m venv /opt/venv \
 && pip install -c constraints.txt --upgrade pip setuptools \
 && pip install -c constraints.txt --index-url "${TORCH_INDEX}" torch torchvision \
 && pip install -c constraints.txt -r requirements.txt -r requirements-train.txt

# Not sandbox/ (the local stand-in for Telegram, for development; .dockerignore leaves it out
# too): without a bot token this image refuses to start rather than serve a sandbox.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
COPY training ./training
RUN pip install --no-deps --no-build-isolation .

# The bundled default, exported, registered and compiled here (a throwaway data folder), then
# bundled without its learner for the slim image: ONNX files and card only.
FROM full-install AS seed
RUN python -m training compile default --data-dir /tmp/seed-data \
 && mkdir -p /seed \
 && python -m training.bundle default /seed/default.tar --without-learner --data-dir /tmp/seed-data \
 && rm -rf /tmp/seed-data

# ----------------------------------------------------------------------------- slim

# The serving dependencies only, at the pins of constraints.txt (the layer the slim and the
# cluster images share); torch and fastai must not come in with them. What serving never runs
# goes in the same layer (the packages' own test suites; onnxruntime's quantization,
# model-conversion and transformer tools): about 35 MB.
FROM runtime AS serving-install
COPY constraints.txt ./
COPY --from=requirements /requirements.txt ./
RUN python3 -m venv /opt/venv \
 && pip install -c constraints.txt --upgrade pip setuptools \
 && pip install -c constraints.txt -r requirements.txt \
 && find /opt/venv/lib -depth -type d -name tests -path "*/site-packages/*" -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/onnxruntime/transformers \
           /opt/venv/lib/python3*/site-packages/onnxruntime/quantization \
           /opt/venv/lib/python3*/site-packages/onnxruntime/tools \
 && python -c "import importlib.util as u, sys; found = [m for m in ('torch', 'fastai', 'torchvision', 'timm', 'onnx') if u.find_spec(m)]; sys.exit(f'the slim image holds {found}' if found else 0)" \
 && if python -c "import torch" 2>/dev/null; then echo "torch imports in the slim image" >&2; exit 1; fi

FROM serving-install AS slim

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
COPY training ./training
RUN pip install --no-deps --no-build-isolation .

# Registered as the active version at the first start when the data folder has none
# (model/seed.py, called from bot/startup.py).
COPY --from=seed /seed /opt/verdict/seed
ENV VERDICT_SEED_MODELS=/opt/verdict/seed

# As the full image below: a normal user, everything written to the /data volume, no secrets.
USER verdict
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-m", "bot.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]

# ----------------------------------------------------------------------------- cluster

# A Ray node of the inference cluster, head or worker (docker-compose.yml's `cluster` profile;
# README: "Past one machine"). The serving dependencies above plus the `cluster` extra
# (ray[serve]), pinned the same way and in their own layer (rebuilt only when that list or the
# pins change); Ray's Java jars and RLlib go in the same layer: Serve never runs them. Then the
# `model` package (what the replicas import: model.serve_app:build_app) and deploy/ (the Serve
# config and the node's entry script). No bot code, no model file and no torch: the replicas
# serve compiled (ONNX) versions, downloaded from the bot by version (sha256 checked).
FROM serving-install AS cluster
COPY --from=requirements /requirements-cluster.txt ./
RUN pip install -c constraints.txt -r requirements-cluster.txt \
 && rm -rf /opt/venv/lib/python3*/site-packages/ray/jars \
           /opt/venv/lib/python3*/site-packages/ray/rllib \
 && python -c "import importlib.util as u, sys; found = [m for m in ('torch', 'fastai', 'torchvision', 'timm', 'onnx') if u.find_spec(m)]; sys.exit(f'the cluster image holds {found}' if found else 0)" \
 && ray --version

COPY pyproject.toml README.md ./
COPY model ./model
RUN pip install --no-deps --no-build-isolation .
COPY deploy ./deploy

# Ray keeps its session (logs, sockets, the object store's spill files) under /tmp/ray: scratch,
# no volume. No usage reports leave the cluster (RAY_USAGE_STATS_ENABLED=1 to send them).
ENV RAY_USAGE_STATS_ENABLED=0
USER verdict
# 6379: the head's GCS (workers join there); 8265: the dashboard and the Serve REST API the bot
# delivers its model through; 8000: the Serve proxy the bot classifies through (every node).
EXPOSE 6379 8265 8000
# deploy/ray-node.sh passes SIGTERM on to `ray start --block`, which stops the node (a worker
# drains first).
STOPSIGNAL SIGTERM
CMD ["/app/deploy/ray-node.sh", "head"]

# ----------------------------------------------------------------------------- full (default)

FROM full-install AS full

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
