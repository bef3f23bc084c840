"""`RemoteClassifier`: the bot's classifier when inference runs on a Ray Serve cluster.

It has `model.pool.Classifier`'s interface (`start`, `close`, `classify`, `swap`, `stats`,
`labels_for`, `model_name`, `backend`, `queue_size`, `set_observer`, `worker_pids`) over HTTP
with aiohttp, so the bot imports no ray and no torch. The cluster runs `model/serve_app.py`.

- `classify` POSTs the bytes to ``INFERENCE_URL``/classify. The answers map onto the pool's:
  a prediction; the same `ImageRejected` subclass (rebuilt from its name and fields); Ray's
  backpressure (503 or 429 from the proxy, past `max_queued_requests`) is `ClassifierBusy`,
  and for the ``Retry-After`` it gives, further photos are refused "busy" here without being
  sent; a connection error or Ray's own 5xx (a replica that died holding the request) is
  retried once, then `ClassifierUnavailable`.
- `swap` sets the deployment's ``user_config`` through the Serve REST API on the Ray
  dashboard (``GET`` then ``PUT /api/serve/applications/``, the whole config with only that
  changed) and returns once every running replica's ``/info`` reports the new file. A replica
  that cannot load it keeps the old model and says why on ``/info``; the previous config is then
  put back and `ModelLoadError` raised: the old model keeps serving.
- `stats` is a `PoolStats` from this side's counters and the last look at the deployment
  (replicas running and wanted), refreshed in the background.

The replicas download the model file from the bot's web server at `model_base_url`
(``GET /models/{version}/{file}``, the registry's folder layout: `bot/web.py` must serve it).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from model.compiled import CompiledModel
from model.files import sha256_file
from model.poolconfig import PoolStats, ReplicaStats, percentile
from model.serve_app import (
    APP_NAME,
    DEPLOYMENT_NAME,
    FASTAI,
    REPLICA_HEADER,
    SERVE_API,
    delivery_config,
    prediction_from_json,
    rejection_from_json,
    running_config,
    status_of,
)
from model.types import ClassifierBusy, ClassifierError, ClassifierUnavailable, Prediction
from model.worker import model_name as learner_name
from model.workers import ModelLoadError

logger = logging.getLogger(__name__)

BatchObserver = Callable[[int, list[float], float], None]
MAX_HOLD_S = 10.0  # the longest Retry-After honoured


class RemoteClassifier:
    """Classify on a Ray Serve deployment; see the module docstring."""

    def __init__(
        self,
        inference_url: str,
        dashboard_url: str,
        model_base_url: str,
        *,
        initial: tuple[Path, str | None, CompiledModel | None] | None = None,
        app_name: str = APP_NAME,
        deployment_name: str = DEPLOYMENT_NAME,
        timeout_s: float = 30.0,
        queue_size: int = 64,
        swap_timeout_s: float = 300.0,
        retry_delay_s: float = 0.2,
        refresh_s: float = 5.0,
    ) -> None:
        """`inference_url`: the Serve proxy (``http://HEAD:8000``); `dashboard_url`: the Ray
        dashboard (``http://HEAD:8265``); `model_base_url`: the bot's web server as the
        replicas reach it. `initial`: (path, sha256, compiled), what `start` delivers.
        `queue_size`: how many requests this bot has in flight at most (more: busy)."""
        self._url = inference_url.rstrip("/")
        self._dashboard = dashboard_url.rstrip("/")
        self._model_base = model_base_url.rstrip("/")
        self._initial = initial
        if initial is not None and initial[2] is not None:
            self._initial_backend = initial[2].backend
        else:
            self._initial_backend = FASTAI
        self._app, self._deployment = app_name, deployment_name
        self._timeout_s, self._queue_size = timeout_s, queue_size
        self._swap_timeout_s, self._retry_delay_s = swap_timeout_s, retry_delay_s
        self._refresh_s = refresh_s
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._swap_lock = asyncio.Lock()
        self._accepting = False
        self._closing = False
        self._hold_until = 0.0
        self._in_flight = 0
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()
        self.model_name = ""  # until a replica says it serves the model delivered
        self._backend = self._initial_backend  # what it is delivered as, until then
        self._version: str | None = None
        self._sha256: str | None = None
        self._labels: dict[str, tuple[str, ...]] = {}
        self._observer: BatchObserver | None = None
        self._counts: Counter[str] = Counter()
        self._latency_ms: deque[float] = deque(maxlen=2000)
        self._replicas_running = 0
        self._replicas_wanted = 0
        self._replica_ids: set[str] = set()
        self._replicas: tuple[ReplicaStats, ...] = ()
        self._wanted: dict[str, Any] | None = None  # the user_config the replicas must have
        self._problem = "not started"  # why the cluster cannot answer now ("" when it can)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Deliver the initial model to the cluster, then keep it there (in the background).

        A cluster that is unreachable, has no application deployed or cannot load the model
        yet does not stop the bot: photos are answered "unavailable" (`stats().unavailable`
        says why, /readyz too) and the model is delivered as soon as the cluster can take it.
        """
        if self._closing:
            raise ClassifierUnavailable("the classifier is shutting down")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._accepting = True
        if self._initial is not None:
            path, sha256, compiled = self._initial
            try:
                await self._swap(path, sha256, compiled, at_start=True)
            except ClassifierError as exc:
                self._problem = str(exc)
                logger.warning(
                    "the inference cluster does not serve the model yet (%s): photos are "
                    "answered 'unavailable' until it does; delivering it again every %.0f s",
                    exc,
                    self._refresh_s,
                )
        else:
            with contextlib.suppress(ClassifierError, aiohttp.ClientError, TimeoutError):
                self._adopt(await self._info())
        with contextlib.suppress(ClassifierError):
            await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="remote-refresh")
        logger.info(
            "remote classifier: %s on %s at %s",
            self.model_name or "(no model yet)",
            self._backend,
            self._url,
        )

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, wait (up to `grace_s`) for those in flight, close."""
        if self._closing:
            return
        self._closing, self._accepting = True, False
        deadline = time.monotonic() + grace_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------- requests

    async def classify(self, image: bytes) -> Prediction:
        """Top-k labels for `image`; the pool's exceptions (see the module docstring)."""
        if not self._accepting or self._session is None:
            raise ClassifierUnavailable("the classifier is not running")
        if time.monotonic() < self._hold_until:
            self._counts["busy"] += 1
            raise ClassifierBusy("the inference cluster asked to wait")
        if self._in_flight >= self._queue_size:
            self._counts["busy"] += 1
            raise ClassifierBusy(f"{self._in_flight} requests already in flight")
        self._in_flight += 1
        self._idle.clear()
        started = time.monotonic()
        try:
            prediction = await self._classify(image)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        elapsed = time.monotonic() - started
        self._latency_ms.append(elapsed * 1000)
        self._counts["answered"] += 1
        if self._observer is not None:
            self._observer(1, [0.0], elapsed)
        return prediction

    async def _classify(self, image: bytes) -> Prediction:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        headers = {"Content-Type": "application/octet-stream"}
        for attempt in (1, 2):
            try:
                async with self._session.post(
                    f"{self._url}/classify",
                    data=io.BytesIO(image),
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    body = await response.read()
                    status, ours = response.status, REPLICA_HEADER in response.headers
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if attempt == 1 and not self._closing:
                    await asyncio.sleep(self._retry_delay_s)
                    continue
                self._counts["failed"] += 1
                raise ClassifierUnavailable(
                    f"the inference cluster is unreachable: {exc}"
                ) from exc
            except TimeoutError:
                self._counts["failed"] += 1
                raise ClassifierUnavailable(
                    "the inference cluster did not answer in time"
                ) from None
            if status == 200 and ours:
                return prediction_from_json(json.loads(body))
            if ours:
                self._raise_replica_error(status, body)
            if status in (429, 503):
                self._counts["busy"] += 1
                self._hold(retry_after)
                raise ClassifierBusy(f"the inference cluster is full ({status})")
            if status >= 500 and attempt == 1 and not self._closing:
                # Ray's own 5xx: the replica holding the request died (or the proxy failed);
                # Serve routes the retry to a live replica.
                logger.warning("inference request failed (%d), retrying once", status)
                self._counts["retried"] += 1
                await asyncio.sleep(self._retry_delay_s)
                continue
            self._counts["failed"] += 1
            raise ClassifierUnavailable(f"the inference cluster answered {status}")
        raise AssertionError("unreachable")

    def _raise_replica_error(self, status: int, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        if status == 422:
            self._counts["rejected"] += 1
            raise rejection_from_json(data)
        self._counts["failed"] += 1
        if status == 413:
            raise ClassifierError(f"the image is over the cluster's {data.get('limit')} bytes")
        if status == 503:
            raise ClassifierUnavailable("the inference cluster has no model loaded yet")
        if status == 500:
            raise ClassifierError(f"the model failed: {data.get('message', '')}")
        raise ClassifierUnavailable(f"the inference cluster answered {status}")

    def _hold(self, retry_after: str | None) -> None:
        try:
            seconds = min(float(retry_after), MAX_HOLD_S) if retry_after else 0.0
        except ValueError:
            seconds = 0.0
        if seconds > 0:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    # ---------------------------------------------------------------------------------- swap

    async def swap(
        self, model_path: Path, sha256: str | None = None, compiled: CompiledModel | None = None
    ) -> str:
        """Serve `model_path` (or its `compiled` form) on every replica; its model name.
        `ModelLoadError` (the old model keeps serving) when a replica cannot load it."""
        return await self._swap(model_path, sha256, compiled, at_start=False)

    async def _swap(
        self,
        model_path: Path,
        sha256: str | None,
        compiled: CompiledModel | None,
        *,
        at_start: bool,
    ) -> str:
        async with self._swap_lock:
            if self._closing:
                raise ClassifierUnavailable("the classifier is shutting down")
            if self._session is None:
                raise ClassifierUnavailable("the classifier is not started")
            user_config = await self._user_config(model_path, sha256, compiled)
            user_config["swap_id"] = uuid.uuid4().hex
            before = self._wanted
            if at_start:  # what the cluster must serve, whether or not it can take it now
                self._wanted = user_config
            details = await self._details()
            previous = self._deploy_config(details)
            await self._put(self._with_user_config(previous, user_config))
            self._wanted = user_config
            try:
                info = await self._wait_for(user_config)
            except ModelLoadError:
                if at_start:
                    raise
                logger.error(
                    "swap to %s failed; putting the previous config back", user_config["version"]
                )
                self._wanted = before
                with contextlib.suppress(ClassifierError, aiohttp.ClientError, TimeoutError):
                    await self._put(previous)
                raise
            self._adopt(info)
            self._problem = ""
            logger.info("cluster swapped to %s on %s", self.model_name, self._backend)
            return self.model_name

    def _with_user_config(
        self, config: dict[str, Any], user_config: dict[str, Any]
    ) -> dict[str, Any]:
        """`config` (every application, as `PUT` takes it) with our deployment's user_config
        replaced."""
        wanted = copy.deepcopy(config)
        self._deployment_entry(wanted)["user_config"] = user_config
        return wanted

    async def _user_config(
        self, model_path: Path, sha256: str | None, compiled: CompiledModel | None
    ) -> dict[str, Any]:
        if compiled is not None:
            return delivery_config(
                self._model_base,
                version=compiled.path.parent.name,
                backend=compiled.backend,
                file=compiled.path.name,
                sha256=compiled.sha256,
                name=compiled.name,
                labels=compiled.labels,
                spec=compiled.spec,
                size=await asyncio.to_thread(_size, compiled.path),
            )
        if sha256 is None:
            sha256 = await asyncio.to_thread(sha256_file, model_path)
        return delivery_config(
            self._model_base,
            version=model_path.parent.name,
            backend=FASTAI,
            file=model_path.name,
            sha256=sha256,
            name=learner_name(model_path, sha256),
            size=await asyncio.to_thread(_size, model_path),
        )

    async def _wait_for(self, user_config: dict[str, Any]) -> dict[str, Any]:
        """The /info of a replica serving `user_config`'s file, once every running replica
        does; `ModelLoadError` when one reports it cannot, the deployment fails, or time's up."""
        deadline = time.monotonic() + self._swap_timeout_s
        version, sha, swap_id = (
            user_config["version"],
            user_config["sha256"],
            user_config["swap_id"],
        )
        reason = "no replica is running"
        while time.monotonic() < deadline:
            details = await self._details()
            app, deployment = self._status_of(details)
            status = deployment.get("status")
            if status in ("DEPLOY_FAILED", "UNHEALTHY") or app.get("status") == "DEPLOY_FAILED":
                raise ModelLoadError(
                    f"the cluster could not serve {version}: "
                    f"{deployment.get('message') or app.get('message', '')}"[:500]
                )
            running = {
                r["replica_id"]
                for r in deployment.get("replicas", [])
                if r.get("state") == "RUNNING"
            }
            settled = (
                status == "HEALTHY"
                and running
                and all(r.get("state") == "RUNNING" for r in deployment.get("replicas", []))
            )
            if settled:
                seen = await self._infos(running)
                for info in seen.values():
                    error = info.get("error") or {}
                    if error.get("swap_id") == swap_id:
                        raise ModelLoadError(f"a replica cannot serve {version}: {error['error']}")
                serving = {
                    rid
                    for rid, info in seen.items()
                    if info.get("swap_id") == swap_id and info.get("sha256") == sha
                }
                if running <= serving:
                    return seen[next(iter(running))]
                reason = f"{len(serving)} of {len(running)} replicas serve it"
            else:
                reason = f"the deployment is {status}"
            await asyncio.sleep(0.5)
        raise ModelLoadError(f"the cluster did not serve {version} in time ({reason})")

    async def _infos(self, replicas: set[str], tries: int = 40) -> dict[str, dict[str, Any]]:
        """/info from each of `replicas` (the proxy picks one per call: ask until all have
        answered, or `tries` calls, four at a time)."""
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(0, tries, 4):
            answers = await asyncio.gather(
                *(self._info() for _ in range(4)), return_exceptions=True
            )
            for info in answers:
                if isinstance(info, dict) and info.get("replica"):
                    seen[info["replica"]] = info
            if replicas <= set(seen):
                break
        return seen

    async def _info(self) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(
            f"{self._url}/info", timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            if response.status != 200 or REPLICA_HEADER not in response.headers:
                raise ClassifierUnavailable(f"the inference cluster answered {response.status}")
            data: dict[str, Any] = await response.json()
            return data

    def _adopt(self, info: dict[str, Any]) -> None:
        if info.get("name"):
            self.model_name = str(info["name"])
            self._backend = str(info.get("backend") or FASTAI)
            self._version, self._sha256 = info.get("version"), info.get("sha256")
            self._labels[self.model_name] = tuple(info.get("labels") or ())

    # ---------------------------------------------------------- the Serve REST API (dashboard)

    async def _details(self) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.get(
                f"{self._dashboard}{SERVE_API}",
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:300]
                    raise ClassifierUnavailable(
                        f"the Ray dashboard answered {response.status}: {text}"
                    )
                data: dict[str, Any] = await response.json()
            return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClassifierUnavailable(f"the Ray dashboard is unreachable: {exc}") from exc

    def _status_of(self, details: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Our application's and our deployment's status in the REST API's details ({}
        for what is not there)."""
        return status_of(details, self._app, self._deployment)

    def _deploy_config(self, details: dict[str, Any]) -> dict[str, Any]:
        """The running config of every application, as `PUT` takes it."""
        if self._app not in (details.get("applications") or {}):
            raise ModelLoadError(
                f"the cluster runs no application {self._app!r}: deploy it first "
                "(python -m model.serve_app deploy --address ...)"
            )
        return running_config(details)

    def _deployment_entry(self, config: dict[str, Any]) -> dict[str, Any]:
        (app,) = [a for a in config["applications"] if a.get("name") == self._app]
        deployments: list[dict[str, Any]] = app.setdefault("deployments", [])
        for entry in deployments:
            if entry.get("name") == self._deployment:
                return entry
        entry = {"name": self._deployment}
        deployments.append(entry)
        return entry

    async def _put(self, config: dict[str, Any]) -> None:
        assert self._session is not None
        async with self._session.put(
            f"{self._dashboard}{SERVE_API}",
            json=config,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            if response.status != 200:
                text = (await response.text())[:500]
                raise ModelLoadError(f"the cluster refused the config ({response.status}): {text}")

    async def _refresh(self) -> None:
        """Look at the deployment: its replicas and what each serves; deliver the model
        again when the deployed config lacks it (the cluster restarted, or an operator
        deployed the config file again, which carries no model)."""
        try:
            details = await self._details()
        except ClassifierUnavailable as exc:
            self._problem = str(exc)
            self._replicas = ()
            raise
        app, deployment = self._status_of(details)
        if not app.get("deployed_app_config"):
            self._problem = (
                f"the cluster runs no application {self._app!r} (deploy it: "
                "python -m model.serve_app deploy --address <its dashboard>)"
            )
            self._replicas = ()
            return
        wanted = self._wanted
        if wanted is not None and self._deployed_swap_id(app) != wanted["swap_id"]:
            async with self._swap_lock:
                if self._wanted is wanted and not self._closing:
                    logger.warning(
                        "the cluster's config does not carry %s: delivering it again",
                        wanted["version"],
                    )
                    with contextlib.suppress(ModelLoadError):
                        await self._put(
                            self._with_user_config(self._deploy_config(details), wanted)
                        )
        replicas = deployment.get("replicas") or []
        running = {r["replica_id"] for r in replicas if r.get("state") == "RUNNING"}
        infos = await self._infos(running, tries=max(8, 4 * len(running))) if running else {}
        if self._replica_ids:
            self._counts["restarts"] += len(self._replica_ids - running)
        self._replica_ids = running
        self._replicas_wanted = int(deployment.get("target_num_replicas") or 0)
        views = []
        for r in replicas:
            info = infos.get(r["replica_id"], {})
            views.append(
                ReplicaStats(
                    replica=str(r["replica_id"]),
                    state=str(r.get("state", "?")),
                    version=info.get("version"),
                    backend=info.get("backend"),
                    ongoing=int(info.get("ongoing") or 0),
                    answered=int((info.get("counts") or {}).get("answered") or 0),
                )
            )
        self._replicas = tuple(views)
        sha = wanted["sha256"] if wanted is not None else self._sha256
        serving = [i for i in infos.values() if i.get("sha256") == sha and i.get("name")]
        self._replicas_running = len(serving)
        if serving:
            if not self.model_name or self._sha256 != sha:
                self._adopt(serving[0])
            self._problem = ""
        elif not running:
            self._problem = f"no replica is running (the deployment is {deployment.get('status')})"
        else:
            errors = [i["error"]["error"] for i in infos.values() if i.get("error")]
            self._problem = "no replica serves the model yet" + (
                f" ({errors[0]})" if errors else ""
            )

    def _deployed_swap_id(self, app: dict[str, Any]) -> str | None:
        for entry in app["deployed_app_config"].get("deployments") or []:
            if entry.get("name") == self._deployment:
                return (entry.get("user_config") or {}).get("swap_id")
        return None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self._refresh()
            except ClassifierError as exc:
                logger.warning("cannot read the cluster's state: %s", exc)
            except Exception:
                logger.exception("reading the cluster's state failed")

    # -------------------------------------------------------------------------------- views

    def stats(self) -> PoolStats:
        """This side's counters and the deployment's replicas at the last look."""
        return PoolStats(
            model=self.model_name,
            workers_ready=self._replicas_running,
            workers_wanted=self._replicas_wanted,
            queue_depth=0,  # the cluster's queues are Ray's (its /metrics)
            in_flight=self._in_flight,
            answered=self._counts["answered"],
            rejected=self._counts["rejected"],
            failed=self._counts["failed"],
            busy_refusals=self._counts["busy"],
            expired=0,
            worker_restarts=self._counts["restarts"],
            batches=self._counts["answered"],
            batch_sizes={},
            queue_ms_p50=0.0,
            queue_ms_p95=0.0,
            inference_ms_p50=percentile(self._latency_ms, 50),
            inference_ms_p95=percentile(self._latency_ms, 95),
            backend=self._backend,
            replicas=self._replicas,
            unavailable=self._problem,
        )

    def labels_for(self, model: str) -> tuple[str, ...] | None:
        return self._labels.get(model)

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def queue_size(self) -> int:
        return self._queue_size

    def set_observer(self, observer: BatchObserver | None) -> None:
        """Called once per answered request: (1, [0.0], round-trip seconds)."""
        self._observer = observer

    def worker_pids(self) -> list[int]:
        return []  # the replicas run elsewhere


def _size(path: Path) -> int:
    return path.stat().st_size


__all__ = ["RemoteClassifier"]
