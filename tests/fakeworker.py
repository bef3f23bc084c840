"""A fake worker process for the pool's failure paths: it hangs, dies or misbehaves on command.

`Classifier(..., worker_target=fakeworker.serve)` runs `serve` instead of `model.worker.serve`:
it speaks the real protocol (model/worker.py) but imports no torch and loads no model, so a
test starts a pool of these in well under a second (start method "spawn").

How it starts depends on `WorkerConfig.model_path`'s name: "hang-at-start" never sends
`Ready`, "fail-at-start" sends `LoadFailed`; anything else (or None) is ready at once. Either
way it first writes its pid to `<models_dir>/started-<pid>`, so that a test can wait for it.

What it does with a batch depends on each image's bytes (`COMMANDS`); any other bytes get a
`Prediction` of the label "fake". A command ending in "-once" misbehaves only the first time
any fake worker sees it (a file in `models_dir` remembers), so that the retry succeeds.
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

from model.types import LabelScore, Prediction
from model.worker import Batch, BatchResult, ItemResult, LoadFailed, Ready, Stop, WorkerConfig

COMMANDS = {
    b"hang": "block forever, holding the batch",
    b"die": "exit at once (status 3)",
    b"garbage": "answer with bytes that do not unpickle",
    b"wrong-batch": "answer with another batch id",
    b"unknown-id": "answer a request id that is not in the batch",
    b"unexpected": "answer with a Ready instead of a BatchResult",
    b"close-pipe": "close the pipe but keep running",
}


def started_pids(folder: Path) -> set[int]:
    """Pids of the fake workers that have started with `models_dir=folder`."""
    return {int(path.name.split("-", 1)[1]) for path in folder.glob("started-*")}


def serve(conn: Connection, config: WorkerConfig) -> None:
    """Process target standing in for `model.worker.serve`."""
    pid = os.getpid()
    (config.models_dir / f"started-{pid}").touch()
    start = config.model_path.name if config.model_path is not None else ""
    if start == "hang-at-start":
        _block()
    if start == "fail-at-start":
        conn.send(LoadFailed("the fake worker was told to fail"))
        return
    model = f"fake@{config.device}"
    conn.send(Ready(model, pid, ("fake", "other")))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, Stop):
            return
        assert isinstance(message, Batch)
        _answer(conn, config, model, message)


def _answer(conn: Connection, config: WorkerConfig, model: str, batch: Batch) -> None:
    results = []
    for request_id, data in batch.items:
        command = _command(config.models_dir, data)
        if command == b"hang":
            _block()
        elif command == b"die":
            os._exit(3)
        elif command == b"garbage":
            conn.send_bytes(b"\x80\x05this is not a pickle")
            return
        elif command == b"wrong-batch":
            conn.send(BatchResult(batch.batch_id + 1, (), 0.0, 0.0))
            return
        elif command == b"unexpected":
            conn.send(Ready(model, os.getpid(), ()))
            return
        elif command == b"close-pipe":
            conn.close()
            _block()
        elif command == b"unknown-id":
            request_id = 10**9
        prediction = Prediction((LabelScore("fake", 1.0),), model, 1, 1)
        results.append(ItemResult(request_id, prediction))
    conn.send(BatchResult(batch.batch_id, tuple(results), 0.0, 0.0))


def _command(folder: Path, data: bytes) -> bytes | None:
    """The command in `data`, if any; a "-once" command only the first time it is seen."""
    if data.endswith(b"-once"):
        marker = folder / f"seen-{data.decode()}"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return None
        data = data.removesuffix(b"-once")
    return data if data in COMMANDS else None


def _block() -> None:
    while True:
        time.sleep(3600)
