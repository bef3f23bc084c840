"""Classify on a Ray Serve cluster: the same engines as the local workers, behind HTTP.

Each replica runs one engine (`model.worker._engine`: `OnnxEngine` for a compiled form, the
fastai `Engine` for a learner) on one CPU, answering micro-batches formed by `@serve.batch`.
The bot talks to it over HTTP only (`bot/remote.py`: no ray, no torch in the bot process):

- ``POST /classify`` (or ``POST /``): the image bytes as the body. 200 with the prediction,
  422 with the rejection (the `ImageRejected` subclass's name and fields, so that the bot gives
  the same replies), 413 past the body limit (checked before anything is decoded), 503 while
  the replica has no model yet, 500 when the model failed. Ray's own answers (backpressure past
  `max_queued_requests`: 503 with ``Retry-After``; a replica that died: 500) lack the
  ``X-Verdict-Replica`` header every answer of a replica carries: that is how the bot tells them
  apart.
- ``GET /info``: the replica's model (version, backend, name, labels, sha256), its id and pid,
  the last load error, and its counters.

Models travel without a shared filesystem. The deployment's ``user_config`` (set through the
Serve REST API by the bot's `RemoteClassifier.swap`, see `delivery_config`) names the version and
one file: its URL on the bot's web server (``GET /models/{version}/{file}``), its sha256, and for a
compiled form the preprocessing spec, the labels and the model name. `reconfigure` downloads the
file into a per-node cache, checks the sha256 of the very bytes it keeps, loads and warms up the
new engine in a thread, and only then replaces the old one; a load that fails keeps the old model
serving and is reported on ``/info`` (a replica with no model yet fails to start instead).

The module's top imports only the standard library and light `model` modules: the bot imports
its wire-format helpers. Ray and Starlette are imported in `build_app` (the application builder
the Serve config names), in the replica, and in the CLI::

    python -m model.serve_app deploy --address http://HEAD:8265 [--config deploy/serve.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import types
from model.compiled import FORM_FILES, CompiledFormError, CompiledModel, PreprocessSpec
from model.files import CHUNK_BYTES, sha256_file
from model.types import ClassifierError, ImageRejected, LabelScore, Prediction

logger = logging.getLogger(__name__)

APP_NAME = "verdict"
SERVE_API = "/api/serve/applications/"  # the Serve REST API, on the Ray dashboard
DEPLOYMENT_NAME = "Classifier"
REPLICA_HEADER = "X-Verdict-Replica"  # the replica's id, on its every answer (not on Ray's)
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "serve.yaml"
FASTAI = "fastai"
BACKENDS = (FASTAI, *FORM_FILES)
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_MODEL_BYTES = 2 * 1024**3
FETCH_TIMEOUT_S = 120.0


# -- the wire format: what the bot sends as user_config and reads back ----------------------


class DeliveryError(ValueError):
    """A user_config that does not describe a model file to load; says which field."""


@dataclass(frozen=True, slots=True)
class ModelDelivery:
    """One model version as the replicas receive it (the deployment's ``user_config``).

    `url` is where the replica downloads `file` (the bot's ``/models/{version}/{file}``);
    the bytes must hash to `sha256`. For a compiled backend, `spec`, `labels` and `name` are
    required (what `CompiledModel` holds); for fastai the learner has its own labels and the
    name is computed from the file (`model.worker.model_name`).
    """

    version: str
    backend: str
    file: str
    url: str
    sha256: str
    name: str = ""
    labels: tuple[str, ...] = ()
    spec: PreprocessSpec | None = None
    size: int | None = None
    swap_id: str = ""  # a fresh id per swap: /info says which swap a replica applied last

    def to_user_config(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "backend": self.backend,
            "file": self.file,
            "url": self.url,
            "sha256": self.sha256,
            "name": self.name,
            "labels": list(self.labels),
            "spec": self.spec.to_json() if self.spec is not None else None,
            "size": self.size,
            "swap_id": self.swap_id,
        }

    @classmethod
    def from_user_config(cls, data: Mapping[str, Any]) -> ModelDelivery:
        def text(key: str, required: bool = True) -> str:
            value = data.get(key)
            if value is None and not required:
                return ""
            if not isinstance(value, str) or (required and not value):
                raise DeliveryError(f"user_config.{key} must be a non-empty string")
            return value

        backend = text("backend")
        if backend not in BACKENDS:
            raise DeliveryError(f"user_config.backend {backend!r} is not one of {BACKENDS}")
        file = text("file")
        if Path(file).name != file or file in (".", ".."):
            raise DeliveryError(f"user_config.file {file!r} is not a plain file name")
        sha256 = text("sha256").lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise DeliveryError("user_config.sha256 is not a sha256 in hex")
        url = text("url")
        if not url.startswith(("http://", "https://")):
            raise DeliveryError("user_config.url must be an http(s) URL")
        labels = data.get("labels") or ()
        if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
            raise DeliveryError("user_config.labels must be a list of strings")
        spec = None
        if data.get("spec") is not None:
            try:
                spec = PreprocessSpec.from_json(data["spec"])
            except CompiledFormError as exc:
                raise DeliveryError(f"user_config.spec: {exc}") from None
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise DeliveryError("user_config.size must be a byte count")
        delivery = cls(
            version=text("version"),
            backend=backend,
            file=file,
            url=url,
            sha256=sha256,
            name=text("name", required=False),
            labels=tuple(labels),
            spec=spec,
            size=size,
            swap_id=text("swap_id", required=False),
        )
        if backend != FASTAI and (spec is None or not labels or not delivery.name):
            raise DeliveryError(f"a {backend} form needs spec, labels and name in user_config")
        return delivery


def delivery_config(
    base_url: str,
    *,
    version: str,
    backend: str,
    file: str,
    sha256: str,
    name: str = "",
    labels: Sequence[str] = (),
    spec: PreprocessSpec | None = None,
    size: int | None = None,
    swap_id: str = "",
) -> dict[str, Any]:
    """The user_config that makes the replicas serve `version`'s `file`, downloaded from the
    bot's web server at `base_url` (``{base_url}/models/{version}/{file}``)."""
    url = f"{base_url.rstrip('/')}/models/{version}/{file}"
    delivery = ModelDelivery(
        version, backend, file, url, sha256.lower(), name, tuple(labels), spec, size, swap_id
    )
    ModelDelivery.from_user_config(delivery.to_user_config())  # the same checks as a replica's
    return delivery.to_user_config()


def prediction_to_json(prediction: Prediction) -> dict[str, Any]:
    return {
        "ok": True,
        "model": prediction.model,
        "width": prediction.width,
        "height": prediction.height,
        "scores": [{"label": s.label, "probability": s.probability} for s in prediction.scores],
    }


def prediction_from_json(data: Mapping[str, Any]) -> Prediction:
    scores = tuple(LabelScore(str(s["label"]), float(s["probability"])) for s in data["scores"])
    return Prediction(scores, str(data["model"]), int(data["width"]), int(data["height"]))


def rejection_to_json(exc: ImageRejected) -> dict[str, Any]:
    """The rejection's class name and its fields (the attributes its constructor sets)."""
    fields = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    return {"ok": False, "error": "rejected", "rejected": type(exc).__name__, "fields": fields}


def rejection_from_json(data: Mapping[str, Any]) -> ImageRejected:
    """The `ImageRejected` a replica answered, rebuilt (the base class if it is unknown)."""
    name = str(data.get("rejected", ""))
    fields = data.get("fields") or {}
    cls = getattr(types, name, None)
    if isinstance(cls, type) and issubclass(cls, ImageRejected) and isinstance(fields, dict):
        try:
            return cls(**fields)
        except TypeError:
            pass
    return ImageRejected(name)


def status_of(
    details: Mapping[str, Any], app: str = APP_NAME, deployment: str = DEPLOYMENT_NAME
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An application's and its deployment's status in the Serve REST API's details ({} for
    what is not there)."""
    application = (details.get("applications") or {}).get(app) or {}
    return application, (application.get("deployments") or {}).get(deployment) or {}


def running_config(details: Mapping[str, Any]) -> dict[str, Any]:
    """The config of every running application as ``PUT`` takes it (a copy to change), with
    the proxy options as they run (left out, Serve would warn that they changed)."""
    apps = (details.get("applications") or {}).values()
    configs = [a["deployed_app_config"] for a in apps if a.get("deployed_app_config")]
    config: dict[str, Any] = {"applications": copy.deepcopy(configs)}
    for key in ("proxy_location", "http_options"):
        if details.get(key):
            config[key] = copy.deepcopy(details[key])
    return config


# -- what a replica does (no ray here: tested without a cluster) -----------------------------


class ModelFetchError(Exception):
    """The model file could not be downloaded, or its bytes are not the ones announced."""


def fetch_model(
    delivery: ModelDelivery,
    cache_dir: Path,
    *,
    max_bytes: int = MAX_MODEL_BYTES,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> Path:
    """The model file in `cache_dir/<sha256>/<file>`, downloaded unless a checked copy is
    there; the sha256 is taken of the bytes as they are written, and a file that does not match
    is never moved into place."""
    target = cache_dir / delivery.sha256 / delivery.file
    if target.exists():
        if sha256_file(target) == delivery.sha256:
            return target
        target.unlink()  # damaged or replaced: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, partial = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    try:
        request = urllib.request.Request(delivery.url, headers=_fetch_headers())
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as r:
            length = r.headers.get("Content-Length")
            if length is not None and int(length) > max_bytes:
                raise ModelFetchError(f"{delivery.url} is {length} bytes, over {max_bytes}")
            while chunk := r.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise ModelFetchError(f"{delivery.url} is over {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != delivery.sha256:
            raise ModelFetchError(
                f"{delivery.url} hashes to {digest.hexdigest()[:12]}…, "
                f"expected {delivery.sha256[:12]}…; not loaded"
            )
        if delivery.size is not None and size != delivery.size:
            raise ModelFetchError(f"{delivery.url} is {size} bytes, expected {delivery.size}")
        os.replace(partial, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ModelFetchError(f"cannot download {delivery.url}: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _same_model(a: ModelDelivery, b: ModelDelivery) -> bool:
    return (a.sha256, a.backend, a.name, a.labels) == (b.sha256, b.backend, b.name, b.labels)


def _fetch_headers() -> dict[str, str]:
    """An optional bearer token for the bot's model endpoint (`MODEL_TOKEN` in the replicas'
    environment: the node's, or the Serve config's runtime_env), as the bot checks it."""
    token = os.environ.get("MODEL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """The application's arguments (``args`` in the Serve config)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    threads: int = 1
    top_k: int = 3
    max_pixels: int = 50_000_000
    device: str = "cpu"
    cache_dir: str = ""  # empty: <tmp>/verdict-serve-models
    max_model_bytes: int = MAX_MODEL_BYTES
    fetch_timeout_s: float = FETCH_TIMEOUT_S

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None) -> ReplicaSettings:
        args = dict(args or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown application args {unknown}; known: {sorted(known)}")
        return cls(**args)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir or Path(tempfile.gettempdir()) / "verdict-serve-models")


@dataclass
class ReplicaCore:
    """One replica's model and counters; the Ray deployment is a thin shell around it."""

    settings: ReplicaSettings
    engine: Any = None
    delivery: ModelDelivery | None = None
    error: dict[str, str] | None = None
    applied: str | None = None  # the swap_id of the last user_config handled
    loading: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    ongoing: int = 0  # requests this replica holds (waiting for a batch or in one)
    _running: Counter[int] = field(default_factory=Counter)  # id(engine) → batches on it
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _last_batch: float = 0.0  # when the last batch ended (monotonic); 0: trimmed since

    async def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        """Serve the model `user_config` delivers (nothing when it names none). A failure keeps
        the current engine and is reported on /info; with no engine yet, it raises."""
        if not user_config or not user_config.get("version"):
            return
        try:
            delivery = ModelDelivery.from_user_config(user_config)
        except DeliveryError as exc:
            self._failed(str(user_config.get("version")), str(user_config.get("swap_id")), exc)
            return
        if self.delivery is not None and _same_model(self.delivery, delivery):
            # The model it serves already: nothing to load (after a refused swap, a rollback,
            # or the bot delivering again after the cluster's config was replaced).
            self.delivery, self.applied, self.error = delivery, delivery.swap_id, None
            return
        self.loading, self.error = delivery.version, None
        started = time.perf_counter()
        try:
            engine = await asyncio.to_thread(self.load, delivery)
        except Exception as exc:
            self._failed(delivery.version, delivery.swap_id, exc)
            return
        finally:
            self.loading = None
        old, self.engine, self.delivery, self.error = self.engine, engine, delivery, None
        # Batches that took the old engine finish on it; only then is the swap applied, so
        # that no answer of the old model comes after /info said the new one serves.
        if old is not None:
            await asyncio.to_thread(self._drain, old)
        self.applied = delivery.swap_id
        logger.warning(
            "serving %s (%s, %s) after %.1fs",
            engine.name,
            delivery.version,
            delivery.backend,
            time.perf_counter() - started,
        )

    def trim_when_idle(self, idle_s: float = 2.0) -> threading.Thread | None:
        """A daemon thread handing freed batch buffers back to the OS once no batch ran for
        `idle_s` (glibc keeps them otherwise: a replica would stay at its busiest size), as
        the pool's workers do. None where there is no glibc."""
        from model.worker import _malloc_trim

        trim = _malloc_trim()
        if trim is None:
            return None

        def run() -> None:
            while True:
                time.sleep(idle_s / 2)
                last = self._last_batch
                if last and time.monotonic() - last >= idle_s:
                    self._last_batch = 0.0
                    trim(0)
                    self.counts["trims"] += 1

        thread = threading.Thread(target=run, name="idle-trim", daemon=True)
        thread.start()
        return thread

    def _drain(self, engine: Any) -> None:
        """Return once no batch runs on `engine` (no longer `self.engine`)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._running.get(id(engine)))

    def _failed(self, version: str, swap_id: str, exc: Exception) -> None:
        self.error = {
            "version": version,
            "swap_id": swap_id,
            "error": f"{type(exc).__name__}: {exc}",
        }
        self.applied = swap_id
        logger.error("cannot serve %s: %s", version, self.error["error"])
        if self.engine is None:
            raise exc  # a replica without a model must not look ready

    def load(self, delivery: ModelDelivery) -> Any:
        """Download, check and load `delivery`'s file; warm the engine up (in a thread)."""
        from PIL import Image

        from model.worker import WorkerConfig, _engine

        Image.MAX_IMAGE_PIXELS = None  # decode_image checks the header with max_pixels
        s = self.settings
        path = fetch_model(
            delivery, s.cache_path, max_bytes=s.max_model_bytes, timeout_s=s.fetch_timeout_s
        )
        compiled = None
        if delivery.backend != FASTAI:
            assert delivery.spec is not None
            compiled = CompiledModel(
                delivery.backend,
                path,
                delivery.sha256,
                delivery.spec,
                delivery.name,
                delivery.labels,
            )
        config = WorkerConfig(
            models_dir=s.cache_path,
            model_path=path if compiled is None else None,
            model_sha256=delivery.sha256 if compiled is None else None,
            threads=s.threads,
            exact_threads=True,  # the replica's CPUs, not the node's
            max_pixels=s.max_pixels,
            top_k=s.top_k,
            device=s.device,
            compiled=compiled,
        )
        engine = _engine(config)
        engine.warm_up()
        if delivery.labels and tuple(engine.labels) != tuple(delivery.labels):
            raise ModelFetchError("the model's labels are not the ones user_config names")
        return engine

    def classify(self, images: Sequence[bytes]) -> list[tuple[int, dict[str, Any]]]:
        """(HTTP status, JSON body) for each image: one engine call for the batch."""
        from model.worker import BatchItem

        with self._lock:
            engine = self.engine  # a swap waits for the batches on the engine it replaces
            if engine is None:
                return [(503, {"ok": False, "error": "no_model"})] * len(images)
            self._running[id(engine)] += 1
        self.batch_sizes[len(images)] += 1
        try:
            results, _, _ = engine.classify([BatchItem(i, d) for i, d in enumerate(images)])
        except Exception as exc:
            logger.exception("a batch of %d failed", len(images))
            self.counts["failed"] += len(images)
            body = {"ok": False, "error": "model_failed", "message": type(exc).__name__}
            return [(500, body)] * len(images)
        finally:
            self._last_batch = time.monotonic()
            with self._lock:
                self._running[id(engine)] -= 1
                if not self._running[id(engine)]:
                    del self._running[id(engine)]
                    self._lock.notify_all()
        answers: list[tuple[int, dict[str, Any]]] = []
        for item in results:
            result = item.result
            if isinstance(result, Prediction):
                self.counts["answered"] += 1
                answers.append((200, prediction_to_json(result)))
            elif isinstance(result, ImageRejected):
                self.counts["rejected"] += 1
                answers.append((422, rejection_to_json(result)))
            else:
                self.counts["failed"] += 1
                message = str(result) if isinstance(result, ClassifierError) else ""
                answers.append((500, {"ok": False, "error": "model_failed", "message": message}))
        return answers

    def info(self, replica: str = "") -> dict[str, Any]:
        from model.worker import heavy_modules

        d = self.delivery
        return {
            "replica": replica,
            "pid": os.getpid(),
            "version": d.version if d else None,
            "backend": d.backend if d else None,
            "sha256": d.sha256 if d else None,
            "name": getattr(self.engine, "name", None),
            "labels": list(getattr(self.engine, "labels", ())),
            "loading": self.loading,
            "error": self.error,
            "swap_id": self.applied,
            "ongoing": self.ongoing,
            "threads": getattr(self.engine, "threads", None),
            "modules": list(heavy_modules()),
            "counts": dict(self.counts),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


# -- the Ray Serve application --------------------------------------------------------------


def build_app(args: Mapping[str, Any] | None = None) -> Any:
    """The application builder the Serve config's ``import_path`` names
    (``model.serve_app:build_app``); `args` are `ReplicaSettings`' fields."""
    settings = ReplicaSettings.from_args(args)
    return _deployment().bind(settings)


def _deployment() -> Any:
    """The deployment class (made here so that importing this module needs no ray). The
    options are defaults; the Serve config overrides them. No autoscaling here: the config's
    `num_replicas` would not replace it (deploy/serve.yaml sets autoscaling)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=16,
        max_queued_requests=64,
        health_check_period_s=5,
    )
    class Classifier:
        def __init__(self, settings: ReplicaSettings) -> None:
            logging.basicConfig(level=logging.WARNING)
            self.settings = settings
            self.core = ReplicaCore(settings)
            self.core.trim_when_idle()
            self.batched.set_max_batch_size(settings.max_batch_size)  # type: ignore[attr-defined]
            self.batched.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
                settings.batch_wait_timeout_s
            )
            try:
                self.replica = serve.get_replica_context().replica_id.unique_id
            except Exception:  # pragma: no cover - outside a replica
                self.replica = ""

        async def reconfigure(self, user_config: dict[str, Any]) -> None:
            await self.core.reconfigure(user_config)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def batched(self, images: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
            # The event loop stays free for /info, health checks and the next batch's requests.
            return await asyncio.to_thread(self.core.classify, images)

        async def __call__(self, request: Request) -> Any:
            def answer(status: int, body: dict[str, Any]) -> Any:
                return JSONResponse(body, status_code=status, headers={REPLICA_HEADER: replica})

            replica = self.replica or "?"
            path = request.url.path.rstrip("/")
            if request.method == "GET" and path.endswith("/info"):
                return answer(200, self.core.info(self.replica))
            if request.method != "POST":
                return answer(405, {"ok": False, "error": "method_not_allowed"})
            limit = self.settings.max_body_bytes
            too_large = {"ok": False, "error": "too_large", "limit": limit}
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                return answer(413, too_large)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return answer(413, too_large)
            self.core.ongoing += 1
            try:
                status, payload = await self.batched(bytes(body))
            finally:
                self.core.ongoing -= 1
            return answer(status, payload)

    return Classifier


# -- the CLI ---------------------------------------------------------------------------------


def load_config(path: Path) -> dict[str, Any]:
    """A Serve config file (YAML, or JSON) as the REST API's JSON."""
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml  # type: ignore[import-untyped]  # installed with ray

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a Serve config (a mapping)")
    return data


def put_config(address: str, config: Mapping[str, Any], timeout_s: float = 30.0) -> None:
    """``PUT /api/serve/applications/`` on the dashboard at `address` (declarative: the
    applications in `config` replace every running one)."""
    request = urllib.request.Request(
        f"{address.rstrip('/')}{SERVE_API}",
        data=json.dumps(config).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


def serve_details(address: str, timeout_s: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(
        f"{address.rstrip('/')}{SERVE_API}", timeout=timeout_s
    ) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def wait_running(address: str, app: str = APP_NAME, timeout_s: float = 300.0) -> dict[str, Any]:
    """The application's details once it is RUNNING; RuntimeError when it failed or timed out."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        try:
            details = serve_details(address)
        except (urllib.error.URLError, OSError):
            time.sleep(1.0)
            continue
        application, _ = status_of(details, app)
        status = application.get("status", "?")
        if status == "RUNNING":
            return application
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"{app} is {status}: {application.get('message', '')}")
        time.sleep(1.0)
    raise RuntimeError(f"{app} is not running after {timeout_s:.0f}s (status {status})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.serve_app")
    commands = parser.add_subparsers(dest="command", required=True)
    deploy = commands.add_parser("deploy", help="deploy the Serve config to a Ray cluster")
    deploy.add_argument(
        "--address",
        default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
        help="the Ray dashboard (default: $RAY_DASHBOARD_ADDRESS or :8265)",
    )
    deploy.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    deploy.add_argument("--no-wait", action="store_true")
    deploy.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        put_config(args.address, config)
    except urllib.error.HTTPError as exc:
        print(
            f"the cluster refused the config: {exc.code} {exc.read().decode()[:2000]}",
            file=sys.stderr,
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach the Ray dashboard at {args.address}: {exc}", file=sys.stderr)
        return 1
    names = [a.get("name", "default") for a in config.get("applications", [])]
    print(f"deployed {', '.join(names)} to {args.address}")
    if not args.no_wait:
        for name in names:
            try:
                wait_running(args.address, name, args.timeout)
            except RuntimeError as exc:
                print(str(exc), file=sys.stderr)
                return 1
            print(f"{name}: RUNNING")
    print(f"Ray dashboard: {args.address}")
    print(
        "the bot's model is delivered at its start (INFERENCE_URL set): replicas answer 503 "
        "until then"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
