"""What runs inside a worker process that serves a compiled (ONNX) form: `OnnxEngine`.

It has the interface of `model.worker.Engine` (name, labels, `warm_up`, `classify`) and the same
decoding and results, but imports onnxruntime, numpy and Pillow only: never torch or fastai.
The bot process imports this module only by name (the worker imports it); onnxruntime is
imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from model.compiled import prepare

if TYPE_CHECKING:
    from model.worker import BatchItem, ItemResult, WorkerConfig

logger = logging.getLogger(__name__)

OUTPUT_NAME = "probabilities"


class CompiledLoadError(Exception):
    """The compiled file cannot serve this model (wrong inputs or outputs); says why."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class OnnxEngine:
    """A compiled model in an onnxruntime session, answering batches as `Engine` does.

    Threads: the session's intra-op pool spans every core this process may use (at least
    `config.threads`; exactly that with `config.exact_threads`), with spinning off. A photo
    alone in the pool runs on all the idle cores; under load, each worker's extra threads
    sleep instead of spinning, so the workers × threads layout costs little contention
    (measured in the report of this change: 2 cores, 2 workers, throughput no lower than
    with one thread each). One session, not a narrow and a wide one:
    a second session costs each worker about 35 MiB.
    """

    def __init__(self, config: WorkerConfig) -> None:
        import onnxruntime as ort

        from model.worker import read_checked

        compiled = config.compiled
        if compiled is None:
            raise ValueError("OnnxEngine needs a WorkerConfig with a compiled model")
        self.config = config
        self.compiled = compiled
        self.spec = compiled.spec
        self.name = compiled.name
        self.labels = tuple(compiled.labels)
        self.backend = compiled.backend
        data, self.sha256 = read_checked(compiled.path, compiled.sha256)
        providers: list[str] = ["CPUExecutionProvider"]
        if config.device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                device_id = config.device.partition(":")[2] or "0"
                providers.insert(0, "CUDAExecutionProvider")
                self._provider_options: list[dict[str, str]] = [{"device_id": device_id}, {}]
            else:
                logger.warning("onnxruntime has no CUDA provider here; serving on the CPU")
                self._provider_options = [{}]
        else:
            self._provider_options = [{}]
        self._providers = providers
        self.threads = (
            max(1, config.threads)
            if config.exact_threads
            else max(1, config.threads, available_cores())
        )
        self.session = self._session(ort, data, self.threads)
        del data
        self._input = self._check_io(self.session)

    def _session(self, ort: Any, data: bytes, threads: int) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A worker that waits for its next batch must not burn a core another worker needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # No arena: ONNX Runtime's own arena keeps a batch's buffers for good, out of reach of
        # the worker's malloc_trim when it is idle. Measured side by side (2 workers, 200
        # photos, then idle): 113 instead of 160 MiB PSS a worker, throughput within the noise.
        options.enable_cpu_mem_arena = False
        return ort.InferenceSession(
            data,
            sess_options=options,
            providers=self._providers,
            provider_options=self._provider_options,
        )

    def _check_io(self, session: Any) -> str:
        """The input's name; `CompiledLoadError` when the file does not fit the model."""
        inputs = {i.name: i for i in session.get_inputs()}
        wanted = self.spec.input_name
        if wanted not in inputs:
            raise CompiledLoadError(
                f"the compiled file has no input {wanted!r} (it has {sorted(inputs)})"
            )
        shape = inputs[wanted].shape
        if len(shape) != 4 or shape[1] != 3:
            raise CompiledLoadError(f"input {wanted!r} has shape {shape}, not (batch, 3, H, W)")
        outputs = {o.name: o for o in session.get_outputs()}
        if OUTPUT_NAME not in outputs:
            raise CompiledLoadError(
                f"the compiled file has no output {OUTPUT_NAME!r} (it has {sorted(outputs)})"
            )
        width = outputs[OUTPUT_NAME].shape[-1]
        if isinstance(width, int) and width != len(self.labels):
            raise CompiledLoadError(
                f"the compiled model has {width} outputs but the model has "
                f"{len(self.labels)} labels"
            )
        return str(wanted)

    def warm_up(self) -> None:
        """Run each session once, and check the output's width on a real answer."""
        from PIL import Image

        image = Image.new("RGB", (320, 240))
        image.paste((200, 120, 40), (40, 30, 200, 180))
        probabilities = self.probabilities([image])
        if probabilities.shape != (1, len(self.labels)):
            raise CompiledLoadError(
                f"the compiled model answers {probabilities.shape[-1]} probabilities but "
                f"the model has {len(self.labels)} labels"
            )

    def probabilities(self, images: list[Any]) -> Any:
        """Class probabilities (float32 numpy), one row per image."""
        import numpy as np

        batch = np.stack([prepare(image, self.spec) for image in images])
        (output,) = self.session.run([OUTPUT_NAME], {self._input: batch})
        return output

    def classify(self, items: Sequence[BatchItem]) -> tuple[list[ItemResult], float, float]:
        """See `model.worker.classify_batch` (resizing counts as time in the model)."""
        import numpy as np

        from model.worker import classify_batch

        def ranked(images: list[Any], k: int) -> list[list[tuple[int, float]]]:
            probabilities = self.probabilities(images)
            # Highest first; among equal values the lower index first, as torch.topk does.
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            return [
                [(int(index), float(probabilities[row, index])) for index in order[row]]
                for row in range(len(images))
            ]

        return classify_batch(items, self.config, self.name, self.labels, ranked)
