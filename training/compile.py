"""`python -m training compile VERSION`: a version's learner as ONNX, verified, maybe int8.

The learner stays the source of truth. Its validation transforms become data
(`model.compiled.PreprocessSpec`, applied by `model.compiled.prepare`) where they are Pillow
work on the item, and part of the exported graph where they are tensor work on the batch
(fastai's `aug_transforms` resample the batch at validation too: `RandomResizedCropGPU`, the
identity `AffineCoordTfm`). The graph ends in the loss function's activation, so its output
("probabilities") is what `get_preds` gives. The export is checked against the learner, run as
`model.worker.Engine` runs it, on sample images of several shapes (and the validation images
when given); only a form that answers the same is recorded on the card.

torch, fastai and onnxruntime are imported inside the functions: `training/__main__.py`
imports this module for its light commands too.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.compiled import (
    FORM_FILES,
    FORM_FP32,
    FORM_INT8,
    CompiledForm,
    CompileRecord,
    PreprocessSpec,
    describe,
    prepare,
)
from model.registry import ModelCard, Registry

MAX_PROBABILITY_DIFF = 1e-3
TIE_MARGIN = 1e-3
MAX_CALIBRATION_IMAGES = 64
MAX_VALIDATION_IMAGES = 400
INT8_MAX_ACCURACY_DROP = 0.01
INT8_MIN_AGREEMENT = 0.98
TIMING_RUNS = 15
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# (width, height) of the built-in check images: landscape, portrait, wide, square, tall,
# small and large, so every branch of crop/pad/squish geometry is exercised.
SAMPLE_SIZES = ((320, 240), (240, 320), (448, 252), (200, 200), (120, 360), (37, 29), (1600, 1200))


class NotCompilable(Exception):
    """The learner's validation transforms (or its model) have no compiled equivalent; the
    message says which, in one line."""


@dataclass(frozen=True)
class _Step:
    """One tensor step of the validation batch pipeline, with its shapes fixed."""

    kind: str  # "crop", "area", "grid" or "matrix"
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width
    rows: Any = None  # matrix: (out_h, h), applied on the left
    columns: Any = None  # matrix: (w, out_w), applied on the right
    size: tuple[int, int] = (0, 0)  # area: the output (height, width)
    grid: Any = None  # grid: the sampling grid (1, h, w, 2)
    mode: str = "bilinear"
    pad_mode: str = "reflection"
    align_corners: bool | None = True


@dataclass(frozen=True)
class _Plan:
    spec: PreprocessSpec
    steps: tuple[_Step, ...]


# ------------------------------------------------------------------------------ the spec


def spec_from_learner(learn: Any) -> PreprocessSpec:
    """What `learn`'s validation transforms do, as a `PreprocessSpec`; `NotCompilable` names
    the first transform that has no equivalent."""
    return _plan(learn).spec


def _is_stub(tfm: Any) -> bool:
    from model.compat import _identity_transform

    return isinstance(tfm, _identity_transform()) or type(tfm).__module__ == "model.compat"


def _runs_at_validation(tfm: Any) -> bool:
    from fastai.vision.augment import AffineCoordTfm

    # AffineCoordTfm overwrites its own split_idx on every call: it always runs.
    if isinstance(tfm, AffineCoordTfm):
        return True
    split = getattr(tfm, "split_idx", None)
    return split is None or split == 1


def _plan(learn: Any) -> _Plan:
    from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
    from fastai.vision.augment import AffineCoordTfm, RandomResizedCropGPU, Resize

    valid = learn.dls.valid
    resize = None
    for tfm in valid.after_item.fs:
        if _is_stub(tfm) or not _runs_at_validation(tfm):
            continue
        if isinstance(tfm, Resize) and type(tfm) is Resize and resize is None:
            resize = tfm
        elif isinstance(tfm, ToTensor):
            continue
        else:
            raise NotCompilable(f"the item transform {type(tfm).__name__} has no compiled form")
    if resize is None:
        raise NotCompilable("the learner has no Resize item transform (its input size varies)")
    # Resize takes (height, width) but stores (width, height) (fastai's _process_sz).
    width, height = (int(v) for v in resize.size)
    method = str(resize.method)
    if method not in ("crop", "squish", "pad"):
        raise NotCompilable(f"unknown Resize method {method!r}")
    pad_mode = str(resize.pad_mode)
    if pad_mode not in ("reflection", "zeros", "border"):
        raise NotCompilable(f"unknown Resize pad mode {pad_mode!r}")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scaled = normalized = False
    steps: list[_Step] = []
    size = (height, width)
    for tfm in valid.after_batch.fs:
        if _is_stub(tfm) or not _runs_at_validation(tfm):
            continue
        name = type(tfm).__name__
        if isinstance(tfm, IntToFloatTensor):
            if float(tfm.div) != 255.0 or scaled:
                raise NotCompilable(f"IntToFloatTensor divides by {tfm.div}, not 255")
            scaled = True
        elif isinstance(tfm, Normalize):
            if not scaled or normalized:
                raise NotCompilable("Normalize before IntToFloatTensor has no compiled form")
            mean, std = _triple(tfm.mean, "mean"), _triple(tfm.std, "std")
            normalized = True
        elif type(tfm) is RandomResizedCropGPU or isinstance(tfm, AffineCoordTfm):
            if not scaled or normalized:
                # Resampling commutes with the per-channel normalisation only because
                # prepare normalises first; keep the order fastai uses.
                raise NotCompilable(f"{name} after Normalize has no compiled form")
            if isinstance(tfm, AffineCoordTfm) and (
                type(tfm).__module__ != "fastai.vision.augment"
            ):
                raise NotCompilable(f"the batch transform {name} has no compiled form")
            new_steps, size = _geometry(tfm, size)
            steps.extend(new_steps)
        else:
            raise NotCompilable(f"the batch transform {name} has no compiled form")
    if not scaled:
        raise NotCompilable("the learner does not scale pixels with IntToFloatTensor")
    spec = PreprocessSpec(
        width=width,
        height=height,
        method=method,
        pad_mode=pad_mode,
        resample=int(resize.mode),
        mean=mean,
        std=std,
    )
    return _Plan(spec, tuple(steps))


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    import torch

    flat = torch.as_tensor(value).detach().float().flatten().tolist()
    if len(flat) == 1:
        flat = flat * 3
    if len(flat) != 3:
        raise NotCompilable(f"Normalize {what} has {len(flat)} values, not 3")
    return (float(flat[0]), float(flat[1]), float(flat[2]))


def _geometry(tfm: Any, size: tuple[int, int]) -> tuple[list[_Step], tuple[int, int]]:
    """The steps `tfm` takes at validation on a batch of `size`, as fastai computes them."""
    import torch
    import torch.nn.functional as F
    from fastai.vision.augment import AffineCoordTfm

    h, w = size
    steps: list[_Step] = []
    if isinstance(tfm, AffineCoordTfm):
        # At validation: the identity matrix (no flip, rotation, warp), resampled to its size.
        target = tfm.size
        mode, pad_mode, align = tfm.mode, str(tfm.pad_mode), tfm.align_corners
    else:
        # RandomResizedCropGPU at validation: the centre crop of its ratio, then resized.
        ratio = tfm.ratio
        if w / h < ratio[0]:
            cp = (int(w / ratio[0]), w)
        elif w / h > ratio[1]:
            cp = (h, int(h * ratio[1]))
        else:
            cp = (h, w)
        cp = (int(cp[0] * tfm.valid_scale), int(cp[1] * tfm.valid_scale))
        top, left = (h - cp[0]) // 2, (w - cp[1]) // 2
        if (top, left, cp[0], cp[1]) != (0, 0, h, w):
            steps.append(_Step("crop", crop=(top, left, cp[0], cp[1])))
        h, w = cp
        target = tfm.size
        mode, pad_mode, align = tfm.mode, "reflection", True
    out = (h, w) if target is None else (target, target) if isinstance(target, int) else target
    out = (int(out[0]), int(out[1]))
    if mode != "bilinear":
        raise NotCompilable(f"{type(tfm).__name__} resamples by {mode!r}, only bilinear compiles")
    theta = torch.eye(3)[None, :2]
    grid = F.affine_grid(theta, [1, 1, *out], align_corners=align)
    if out == (h, w) and align:
        # The identity grid with align_corners samples every pixel at its own centre.
        return steps, out
    # fastai's _grid_sample: an area resize first when shrinking by more than half.
    z = 1 / float(grid.max() - grid.min()) * 2
    d = min(h / out[0], w / out[1]) / 2
    if d > 1 and d > z:
        probe = F.interpolate(
            torch.zeros(1, 1, h, w), scale_factor=1 / d, mode="area", recompute_scale_factor=True
        )
        h, w = int(probe.shape[-2]), int(probe.shape[-1])
        steps.append(_Step("area", size=(h, w)))
    steps.append(_Step("grid", grid=grid, mode=mode, pad_mode=pad_mode, align_corners=align))
    return steps, out


# ----------------------------------------------------------------------------- the graph


def _apply(step: _Step, x: Any) -> Any:
    """One batch step on `x` (batch, channels, h, w), as fastai computes it."""
    import torch
    import torch.nn.functional as F

    if step.kind == "crop":
        top, left, height, width = step.crop
        return x[:, :, top : top + height, left : left + width]
    if step.kind == "area":
        return F.adaptive_avg_pool2d(x, step.size)
    if step.kind == "matrix":
        return torch.matmul(torch.matmul(step.rows, x), step.columns)
    grid = step.grid.expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(
        x, grid, mode=step.mode, padding_mode=step.pad_mode, align_corners=step.align_corners
    )


def _fused(steps: tuple[_Step, ...], size: tuple[int, int]) -> tuple[_Step, ...]:
    """The area resize and the resampling of the identity grid as one pair of matrices.

    Both are linear and act on rows and columns separately, so together they are
    `rows @ x @ columns`: two MatMuls, which ONNX Runtime runs far faster than its
    adaptive pooling with uneven windows (exported as one slice per window) and GridSample.
    The matrices are read off the real steps on one-hot rows and columns, and the fused form
    is kept only if it gives what the steps give on a random image (else the steps stay).
    """
    import torch

    h, w = size
    head = [step for step in steps if step.kind == "crop"]
    for step in head:
        h, w = step.crop[2], step.crop[3]
    tail = [step for step in steps if step.kind != "crop"]
    if not tail or any(step.kind not in ("area", "grid") for step in tail):
        return steps
    if [step.kind for step in steps[: len(head)]] != ["crop"] * len(head):
        return steps

    def run(x: Any) -> Any:
        for step in tail:
            x = _apply(step, x)
        return x

    with torch.no_grad():
        chunk = 32
        row_columns = []
        for start in range(0, h, chunk):
            count = min(chunk, h - start)
            probe = torch.zeros(count, 1, h, w)
            probe[torch.arange(count), 0, torch.arange(start, start + count), :] = 1.0
            row_columns.append(run(probe)[:, 0, :, 0])  # (count, out_h)
        rows = torch.cat(row_columns).T.contiguous()  # (out_h, h)
        column_rows = []
        for start in range(0, w, chunk):
            count = min(chunk, w - start)
            probe = torch.zeros(count, 1, h, w)
            probe[torch.arange(count), 0, :, torch.arange(start, start + count)] = 1.0
            column_rows.append(run(probe)[:, 0, 0, :])  # (count, out_w)
        columns = torch.cat(column_rows).contiguous()  # (w, out_w)
        fused = _Step("matrix", rows=rows, columns=columns)
        check = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        if float((run(check) - _apply(fused, check)).abs().max()) > 1e-5:
            return steps
    return (*head, fused)


def _exportable(learn: Any, plan: _Plan) -> Any:
    """The model as exported: batch steps, the network, the loss function's activation."""
    import torch
    from fastcore.basics import getcallable

    activation = getcallable(learn.loss_func, "activation")
    probe = torch.zeros(2, 3)
    if not torch.allclose(activation(probe), torch.softmax(probe, dim=1)):
        raise NotCompilable("the loss function's activation is not a softmax")

    steps = _fused(plan.steps, (plan.spec.height, plan.spec.width))

    class Compiled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = learn.model
            self.steps = steps
            for index, step in enumerate(steps):
                for name in ("grid", "rows", "columns"):
                    value = getattr(step, name)
                    if value is not None:
                        self.register_buffer(f"{name}{index}", value.clone())

        def forward(self, x: Any) -> Any:
            for index, step in enumerate(self.steps):
                buffers = {
                    name: getattr(self, f"{name}{index}")
                    for name in ("grid", "rows", "columns")
                    if getattr(step, name) is not None
                }
                x = _apply(replace(step, **buffers), x)
            return torch.softmax(self.model(x), dim=1)

    return Compiled().eval()


def _export(learn: Any, plan: _Plan, path: Path) -> float:
    """Export to `path` (one file); the seconds it took."""
    import contextlib
    import io

    import torch

    started = time.perf_counter()
    module = _exportable(learn, plan)
    example = torch.zeros(2, 3, plan.spec.height, plan.spec.width)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=[plan.spec.input_name],
            output_names=["probabilities"],
            external_data=False,
        )
    return time.perf_counter() - started


# -------------------------------------------------------------------- running both sides


def _learner_probabilities(learn: Any, images: Sequence[Any]) -> Any:
    """What `model.worker.Engine`'s fast path answers for decoded images (a numpy array)."""
    import torch
    from fastai.vision.core import PILImage
    from fastcore.basics import getcallable

    after_item, after_batch = learn.dls.valid.after_item, learn.dls.valid.after_batch
    after_item.split_idx = after_batch.split_idx = 1
    tensors = [after_item((PILImage(image),))[0] for image in images]
    batch = after_batch((type(tensors[0])(torch.stack(tensors)),))[0]
    with torch.inference_mode():
        logits = learn.model(batch)
        return getcallable(learn.loss_func, "activation")(logits).float().cpu().numpy()


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_probabilities(session: Any, spec: PreprocessSpec, images: Sequence[Any]) -> Any:
    import numpy as np

    rows = []
    for start in range(0, len(images), 16):
        batch = np.stack([prepare(image, spec) for image in images[start : start + 16]])
        rows.append(session.run(None, {spec.input_name: batch})[0])
    return np.concatenate(rows)


def _median_ms(run: Callable[[], Any], runs: int = TIMING_RUNS) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _fastai_ms(learn: Any, image: Any) -> float:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _median_ms(lambda: _learner_probabilities(learn, [image]))
    finally:
        torch.set_num_threads(threads)


def _onnx_ms(session: Any, spec: PreprocessSpec, image: Any) -> float:
    # Like the fastai figure, from the decoded image: preparing it, then the graph.
    return _median_ms(lambda: _onnx_probabilities(session, spec, [image]))


def sample_images() -> list[Any]:
    """Structured synthetic RGB images (gradients, shapes, stripes) of several shapes."""
    import numpy as np
    from PIL import Image, ImageDraw

    images = []
    for index, (w, h) in enumerate(SAMPLE_SIZES):
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        r = 255 * xs / max(w - 1, 1)
        g = 255 * ys / max(h - 1, 1)
        b = 127.5 + 127.5 * np.sin((xs + 2 * ys) / (6 + index))
        image = Image.fromarray(np.stack([r, g, b], axis=2).clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        draw.ellipse((w * 0.1, h * 0.2, w * 0.55, h * 0.7), fill=(30 * index, 200, 90))
        draw.rectangle((w * 0.6, h * 0.1, w * 0.9, h * 0.45), fill=(240, 240 - 30 * index, 20))
        draw.line((0, h - 1, w - 1, 0), fill=(0, 0, 0), width=max(1, w // 40))
        images.append(image)
    return images


def _decode(path: Path) -> Any:
    from model.images import decode_image

    return decode_image(Path(path).read_bytes(), MAX_PIXELS)


def _decoded(paths: Sequence[Path]) -> Iterator[tuple[Path, Any]]:
    from model.types import ImageRejected

    for path in paths:
        try:
            yield path, _decode(path)
        except (ImageRejected, OSError):
            continue


# ------------------------------------------------------------------------------ compiling


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _versions() -> dict[str, str]:
    import fastai
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "fastai": fastai.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _one_line(exc: BaseException) -> str:
    """The exception as one line: the innermost cause (the exporter wraps the error that
    names the operator in two generic ones), without terminal colours."""
    import re

    while exc.__cause__ is not None:
        exc = exc.__cause__
    # Exporters colour their messages for terminals; the card keeps the words.
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sha256(path: Path) -> str:
    from model.files import sha256_file

    return sha256_file(path)


def _accuracy(probabilities: Any, targets: Sequence[int]) -> float:
    hits = sum(
        int(row.argmax()) == target for row, target in zip(probabilities, targets, strict=True)
    )
    return round(hits / len(targets), 4)


def compile_learner(
    learn: Any,
    workdir: Path,
    *,
    validation: Sequence[tuple[Path, str]] | None = None,
    calibration: Sequence[Path] | None = None,
    out: Callable[[str], None] | None = None,
) -> tuple[CompileRecord, dict[str, Path]]:
    """Export `learn` to ONNX in `workdir`, verify it, maybe make a kept int8 form; the record
    and the verified forms' files (kind → path)."""
    import numpy as np

    say = out or (lambda line: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    learn.model.eval()
    learn.model.to("cpu")
    versions = _versions()
    record = CompileRecord(compiled_at=_now(), tool_versions=versions)
    try:
        plan = _plan(learn)
    except NotCompilable as exc:
        return _replace(record, reason=f"not compilable: {exc}"), {}
    fp32_path = workdir / FORM_FILES[FORM_FP32]
    try:
        seconds = _export(learn, plan, fp32_path)
    except NotCompilable as exc:
        return _replace(record, spec=plan.spec, reason=f"not compilable: {exc}"), {}
    except Exception as exc:
        return _replace(
            record, spec=plan.spec, reason=f"cannot export to ONNX: {_one_line(exc)}"
        ), {}
    say(f"exported to ONNX in {seconds:.0f} s")
    vocab = [str(label) for label in learn.dls.vocab]
    labelled = [(p, image, label) for (p, label), (_, image) in _pairs(validation or [])]
    labelled = labelled[:MAX_VALIDATION_IMAGES]
    images = sample_images() + [image for _, image, _ in labelled]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = _learner_probabilities_batched(learn, images)
    try:
        session = _session(fp32_path)
        compiled = _onnx_probabilities(session, plan.spec, images)
    except Exception as exc:
        return _replace(
            record, spec=plan.spec, reason=f"cannot run the ONNX file: {_one_line(exc)}"
        ), {}
    problem = _mismatch(reference, compiled)
    record = _replace(record, spec=plan.spec, checked_images=len(images))
    if problem is not None:
        return _replace(record, reason=f"verification failed: {problem}"), {}
    max_diff = float(np.abs(reference - compiled).max())
    targets = [vocab.index(label) if label in vocab else -1 for _, _, label in labelled]
    n_samples = len(images) - len(labelled)
    timing_image = images[0]
    fastai_ms = _fastai_ms(learn, timing_image)
    fp32_ms = _onnx_ms(session, plan.spec, timing_image)
    fastai_acc = fp32_acc = None
    if labelled:
        fastai_acc = _accuracy(reference[n_samples:], targets)
        fp32_acc = _accuracy(compiled[n_samples:], targets)
    forms = {
        FORM_FP32: CompiledForm(
            FORM_FP32,
            FORM_FILES[FORM_FP32],
            _sha256(fp32_path),
            fp32_path.stat().st_size,
            ms_per_image=fp32_ms,
            accuracy=fp32_acc,
            max_probability_diff=float(f"{max_diff:.3g}"),
        )
    }
    files = {FORM_FP32: fp32_path}
    int8_line: str
    if not calibration:
        int8_line = "not made: no calibration images"
    elif not labelled:
        int8_line = "not made: no labelled validation images to check it on"
    else:
        int8_line, int8_form = _int8(
            fp32_path,
            workdir,
            plan.spec,
            calibration,
            labelled,
            targets,
            compiled[n_samples:],
            timing_image,
        )
        if int8_form is not None:
            forms[FORM_INT8] = int8_form
            files[FORM_INT8] = workdir / FORM_FILES[FORM_INT8]
    return (
        _replace(
            record,
            forms=forms,
            int8=int8_line,
            fastai_ms_per_image=fastai_ms,
            fastai_accuracy=fastai_acc,
        ),
        files,
    )


def _replace(record: CompileRecord, **changes: Any) -> CompileRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def _pairs(
    validation: Sequence[tuple[Path, str]],
) -> Iterator[tuple[tuple[Path, str], tuple[Path, Any]]]:
    from model.types import ImageRejected

    for path, label in validation:
        try:
            yield (Path(path), str(label)), (Path(path), _decode(Path(path)))
        except (ImageRejected, OSError):
            continue


def _learner_probabilities_batched(learn: Any, images: Sequence[Any]) -> Any:
    import numpy as np

    return np.concatenate(
        [_learner_probabilities(learn, images[i : i + 16]) for i in range(0, len(images), 16)]
    )


def _mismatch(reference: Any, compiled: Any) -> str | None:
    """Why the compiled answers are not the learner's (None when they are): the same top-1
    on every image and probabilities within MAX_PROBABILITY_DIFF."""
    import numpy as np

    if reference.shape != compiled.shape:
        return f"output shape {compiled.shape} is not the learner's {reference.shape}"
    diff = float(np.abs(reference - compiled).max())
    if not np.isfinite(compiled).all():
        return "the ONNX output is not finite"
    if diff > MAX_PROBABILITY_DIFF:
        return f"probabilities differ by up to {diff:.2g} (allowed {MAX_PROBABILITY_DIFF:g})"
    for row, (ref, got) in enumerate(zip(reference, compiled, strict=True)):
        if int(ref.argmax()) == int(got.argmax()):
            continue
        top2 = np.sort(ref)[-2:]
        # A tie: the learner's own top two are within TIE_MARGIN, so either answer is its
        # answer up to float rounding; not a disagreement.
        if float(top2[1] - top2[0]) < TIE_MARGIN:
            continue
        return f"top-1 differs on image {row + 1} of {len(reference)}"
    return None


class _Calibration:
    """onnxruntime's CalibrationDataReader over prepared images, one at a time."""

    def __init__(self, spec: PreprocessSpec, paths: Sequence[Path]) -> None:
        self.spec = spec
        self.items = iter([image for _, image in _decoded(paths)])

    def get_next(self) -> dict[str, Any] | None:
        image = next(self.items, None)
        if image is None:
            return None
        return {self.spec.input_name: prepare(image, self.spec)[None]}

    def rewind(self) -> None:  # pragma: no cover - not used by quantize_static's minmax
        pass


def _calibration_paths(calibration: Sequence[Path]) -> list[Path]:
    paths = sorted(Path(p) for p in calibration)
    if len(paths) <= MAX_CALIBRATION_IMAGES:
        return paths
    step = len(paths) / MAX_CALIBRATION_IMAGES  # spread over the folders, not the first few
    return [paths[int(i * step)] for i in range(MAX_CALIBRATION_IMAGES)]


def _int8(
    fp32_path: Path,
    workdir: Path,
    spec: PreprocessSpec,
    calibration: Sequence[Path],
    labelled: Sequence[tuple[Path, Any, str]],
    targets: Sequence[int],
    fp32_probabilities: Any,
    timing_image: Any,
) -> tuple[str, CompiledForm | None]:
    """Quantize statically, check against fp32 on the labelled images: the int8 line, and the
    form when it is kept."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_path = workdir / FORM_FILES[FORM_INT8]
    source = fp32_path
    pre = workdir / "model-pre.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception:
        source = fp32_path  # the quantizer works without it, a little slower
    # The final softmax stays float: its output is the answer, and probabilities near 0 and
    # 1 would lose their distinctions on a uint8 scale.
    excluded = [n.name for n in onnx.load(str(source)).graph.node if n.op_type == "Softmax"]

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    reader = Reader(spec, _calibration_paths(calibration))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(source),
                str(int8_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                nodes_to_exclude=excluded,
                # The convolutions are nearly all the work; the head (small matrices after
                # pooling, where one class's margin lives) and the resampling stay float.
                op_types_to_quantize=["Conv"],
                # Ranges from the 99.999th percentile: a few outlying activations in the
                # calibration images would otherwise waste most of the uint8 scale.
                calibrate_method=CalibrationMethod.Percentile,
            )
        session = _session(int8_path)
        probabilities = _onnx_probabilities(session, spec, [image for _, image, _ in labelled])
    except Exception as exc:
        int8_path.unlink(missing_ok=True)
        return f"not made: quantization failed: {_one_line(exc)}", None
    finally:
        pre.unlink(missing_ok=True)
    accuracy = _accuracy(probabilities, targets)
    fp32_accuracy = _accuracy(fp32_probabilities, targets)
    agreement = round(
        sum(
            int(a.argmax()) == int(b.argmax())
            for a, b in zip(probabilities, fp32_probabilities, strict=True)
        )
        / len(targets),
        4,
    )
    figures = (
        f"accuracy {accuracy:.1%} vs {fp32_accuracy:.1%} fp32, agrees on {agreement:.1%} "
        f"of {len(targets)} images"
    )
    if fp32_accuracy - accuracy > INT8_MAX_ACCURACY_DROP + 1e-9 or agreement < INT8_MIN_AGREEMENT:
        int8_path.unlink(missing_ok=True)
        return (
            f"refused: {figures} (needs at most a {INT8_MAX_ACCURACY_DROP:.0%} drop and "
            f"{INT8_MIN_AGREEMENT:.0%} agreement)",
            None,
        )
    form = CompiledForm(
        FORM_INT8,
        FORM_FILES[FORM_INT8],
        _sha256(int8_path),
        int8_path.stat().st_size,
        ms_per_image=_onnx_ms(session, spec, timing_image),
        accuracy=accuracy,
        agreement=agreement,
    )
    return f"kept: {figures}", form


# ------------------------------------------------------------------------------ versions


def labelled_images(folder: Path) -> list[tuple[Path, str]]:
    """(image, label) for each image in `folder`'s label sub-folders (recursively)."""
    pairs = [(path, path.relative_to(folder).parts) for path in image_files(folder)]
    return [(path, parts[0]) for path, parts in pairs if len(parts) > 1]


def image_files(folder: Path) -> list[Path]:
    """Every image under `folder` (hidden files and folders left out)."""
    return sorted(
        path
        for path in Path(folder).rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def compile_registered(
    registry: Registry,
    card: ModelCard,
    learn: Any | None = None,
    *,
    validation: Sequence[tuple[Path, str]] | None = None,
    calibration: Sequence[Path] | None = None,
    out: Callable[[str], None] = print,
) -> ModelCard:
    """Compile a registered version (its learner loaded from the checked file unless given)
    and record the result on its card; never raises for a learner that does not compile."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="verdict-compile-") as tmp:
        try:
            if learn is None:
                learn = _load_checked(registry, card)
            record, files = compile_learner(
                learn, Path(tmp), validation=validation, calibration=calibration, out=out
            )
        except Exception as exc:  # a compile problem must never cost the version
            record, files = (
                CompileRecord(compiled_at=_now(), reason=f"compile failed: {_one_line(exc)}"),
                {},
            )
        updated = registry.record_compiled(card, record, files)
    for line in describe(updated.compile_record):
        out(f"  {line}")
    return updated


def _load_checked(registry: Registry, card: ModelCard) -> Any:
    from model.worker import load, read_checked

    checked = registry.checked_model(card)
    data, _ = read_checked(checked.path, checked.sha256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(data, checked.path.name)


def compile_version(
    registry: Registry,
    version: str,
    *,
    calibrate: Path | None = None,
    images: Path | None = None,
    out: Callable[[str], None] = print,
) -> ModelCard:
    """`python -m training compile VERSION`: compile, verify and record; the updated card."""
    card = registry.get(version)
    validation = labelled_images(images) if images is not None else None
    calibration = image_files(calibrate) if calibrate is not None else None
    out(f"Compiling {card.version} ({card.architecture})…")
    return compile_registered(
        registry, card, validation=validation, calibration=calibration, out=out
    )
