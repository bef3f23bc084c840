"""The compiled form of a model version: ONNX files, the preprocessing they expect, and which
form a worker should serve.

The fastai learner (``model.pkl``) stays the source of truth: `training` compiles it to ONNX
(`training/compile.py`), checks that the compiled form answers as the learner does, and writes
what it found on the version's card under ``"compiled"`` (`CompileRecord`). A worker serving a
compiled form imports onnxruntime, numpy and Pillow only: it decodes with `model.images` and
prepares pixels with `prepare`, which does what the learner's validation transforms do.

Nothing here imports torch, fastai or onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the registry reads cards with this module: Pillow is imported when used
    from PIL import Image

BACKENDS = ("auto", "fastai", "onnx", "onnx-int8")
Backend = Literal["auto", "fastai", "onnx", "onnx-int8"]
FORM_FP32 = "onnx"
FORM_INT8 = "onnx-int8"
FORM_FILES = {FORM_FP32: "model.onnx", FORM_INT8: "model-int8.onnx"}
RESIZE_METHODS = ("crop", "squish", "pad")
PAD_MODES = ("reflection", "zeros", "border")


class CompiledFormError(Exception):
    """A compile record or preprocessing spec is malformed; the message says which field."""


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """What the learner's validation transforms do to a decoded RGB image, as data.

    Resize to `width` × `height` by `method` the way fastai's `Resize` does at validation
    (centre crop, squish, or pad with `pad_mode`), resampling with Pillow's `resample`; then
    scale to [0, 1] and normalise with `mean` and `std` (per channel), channels first.
    """

    width: int
    height: int
    method: str = "crop"
    pad_mode: str = "reflection"
    resample: int = 2  # PIL.Image.Resampling.BILINEAR
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_name: str = "images"

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object (stored on the card)."""
        return {
            "width": self.width,
            "height": self.height,
            "method": self.method,
            "pad_mode": self.pad_mode,
            "resample": self.resample,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_name": self.input_name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Read a spec strictly; `CompiledFormError` names the field that is wrong."""
        try:
            spec = cls(
                width=_int(data, "width"),
                height=_int(data, "height"),
                method=_str(data, "method"),
                pad_mode=_str(data, "pad_mode"),
                resample=_int(data, "resample"),
                mean=_triple(data, "mean"),
                std=_triple(data, "std"),
                input_name=_str(data, "input_name"),
            )
        except KeyError as exc:
            raise CompiledFormError(f"the preprocessing spec has no {exc.args[0]!r}") from None
        if spec.method not in RESIZE_METHODS:
            raise CompiledFormError(f"unknown resize method {spec.method!r}")
        if spec.pad_mode not in PAD_MODES:
            raise CompiledFormError(f"unknown pad mode {spec.pad_mode!r}")
        if not (0 < spec.width <= 4096 and 0 < spec.height <= 4096):
            raise CompiledFormError(f"input size {spec.width}×{spec.height} is out of range")
        if any(s == 0 for s in spec.std):
            raise CompiledFormError("std has a zero")
        return spec


def prepare(image: Image.Image, spec: PreprocessSpec) -> Any:
    """`image` (8-bit RGB) as the model's input: a float32 array of shape (3, height, width).

    The geometry follows fastai's validation `Resize`: for crop and pad, the largest (crop) or
    smallest (pad) window of the target's aspect ratio, centred, with sides truncated to whole
    pixels, is cut out (padding outside the image by `pad_mode`), then resized to the target;
    for squish, the whole image is resized.
    """
    import numpy as np

    target_w, target_h = spec.width, spec.height
    w, h = image.size
    if spec.method == "squish":
        image = image.resize((target_w, target_h), spec.resample)
    else:
        ratio_w, ratio_h = w / target_w, h / target_h
        # Crop keeps the smaller ratio (the window fits inside); pad the larger one.
        scale = min(ratio_w, ratio_h) if spec.method == "crop" else max(ratio_w, ratio_h)
        win_w, win_h = int(scale * target_w), int(scale * target_h)
        left, top = int(0.5 * (w - win_w)), int(0.5 * (h - win_h))
        image = _crop_pad(image, (win_w, win_h), (left, top), spec.pad_mode)
        image = image.resize((target_w, target_h), spec.resample)
    pixels = np.asarray(image, dtype=np.float32)  # (h, w, 3), 0..255
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    std = np.asarray(spec.std, dtype=np.float32) * 255.0
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def _crop_pad(
    image: Image.Image, size: tuple[int, int], top_left: tuple[int, int], pad_mode: str
) -> Image.Image:
    """The window of `size` at `top_left` (which may reach outside the image); what lies
    outside is filled by `pad_mode`, as fastai's `crop_pad` does for Pillow images."""
    import numpy as np
    from PIL import Image

    w, h = image.size
    (win_w, win_h), (left, top) = size, top_left
    inside = (max(left, 0), max(top, 0), min(left + win_w, w), min(top + win_h, h))
    if inside != (0, 0, w, h):
        image = image.crop(inside)
    before = (max(-left, 0), max(-top, 0))
    after = (max(left + win_w - w, 0), max(top + win_h - h, 0))
    if any(before) or any(after):
        mode = {"reflection": "reflect", "zeros": "constant", "border": "edge"}[pad_mode]
        array = np.asarray(image)
        widths = ((before[1], after[1]), (before[0], after[0]), (0, 0))
        image = Image.fromarray(np.pad(array, widths, mode=mode))  # type: ignore[call-overload]
    return image


@dataclass(frozen=True, slots=True)
class CompiledForm:
    """One compiled file of a version and what was measured of it."""

    kind: str  # FORM_FP32 or FORM_INT8
    file: str
    sha256: str
    file_size: int
    ms_per_image: float | None = None  # one image, one thread, measured at compile time
    accuracy: float | None = None  # on the version's validation images, when there were any
    agreement: float | None = None  # top-1 agreement with the fp32 form (int8 only)
    max_probability_diff: float | None = None  # against the learner (fp32 only)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "file_size": self.file_size,
            "ms_per_image": self.ms_per_image,
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "max_probability_diff": self.max_probability_diff,
        }

    @classmethod
    def from_json(cls, kind: str, data: Mapping[str, Any]) -> CompiledForm:
        try:
            form = cls(
                kind=kind,
                file=_str(data, "file"),
                sha256=_str(data, "sha256"),
                file_size=_int(data, "file_size"),
                ms_per_image=_optional_float(data, "ms_per_image"),
                accuracy=_optional_float(data, "accuracy"),
                agreement=_optional_float(data, "agreement"),
                max_probability_diff=_optional_float(data, "max_probability_diff"),
            )
        except KeyError as exc:
            raise CompiledFormError(f"the {kind} form has no {exc.args[0]!r}") from None
        if Path(form.file).name != form.file or form.file in ("", ".", ".."):
            raise CompiledFormError(f"the {kind} form's file {form.file!r} is not a plain name")
        return form


@dataclass(frozen=True)
class CompileRecord:
    """What compiling a version found: stored on its card as ``"compiled"``.

    `forms` holds only verified forms (an int8 form only when it was kept). `reason` says in
    one line why there is no fp32 form (the version then serves on fastai); `int8` says in one
    line what became of the int8 form (kept, refused and why, or not made and why).
    """

    compiled_at: str
    spec: PreprocessSpec | None = None
    forms: dict[str, CompiledForm] = field(default_factory=dict)
    reason: str | None = None
    int8: str | None = None
    checked_images: int = 0
    fastai_ms_per_image: float | None = None
    fastai_accuracy: float | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether a verified fp32 form exists."""
        return FORM_FP32 in self.forms and self.spec is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "compiled_at": self.compiled_at,
            "spec": self.spec.to_json() if self.spec is not None else None,
            "forms": {kind: form.to_json() for kind, form in self.forms.items()},
            "reason": self.reason,
            "int8": self.int8,
            "checked_images": self.checked_images,
            "fastai_ms_per_image": self.fastai_ms_per_image,
            "fastai_accuracy": self.fastai_accuracy,
            "tool_versions": dict(self.tool_versions),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompileRecord:
        """Read a record strictly; `CompiledFormError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise CompiledFormError("the compile record is not an object")
        forms_data = data.get("forms") or {}
        if not isinstance(forms_data, Mapping):
            raise CompiledFormError("the compile record's forms are not an object")
        forms = {}
        for kind, value in forms_data.items():
            if kind not in FORM_FILES or not isinstance(value, Mapping):
                raise CompiledFormError(f"unknown compiled form {kind!r}")
            forms[kind] = CompiledForm.from_json(kind, value)
        spec_data = data.get("spec")
        try:
            return cls(
                compiled_at=_str(data, "compiled_at"),
                spec=PreprocessSpec.from_json(spec_data) if spec_data is not None else None,
                forms=forms,
                reason=_optional_str(data, "reason"),
                int8=_optional_str(data, "int8"),
                checked_images=_int(data, "checked_images") if "checked_images" in data else 0,
                fastai_ms_per_image=_optional_float(data, "fastai_ms_per_image"),
                fastai_accuracy=_optional_float(data, "fastai_accuracy"),
                tool_versions={
                    str(k): str(v) for k, v in (data.get("tool_versions") or {}).items()
                },
            )
        except KeyError as exc:
            raise CompiledFormError(f"the compile record has no {exc.args[0]!r}") from None
        except (AttributeError, TypeError) as exc:
            raise CompiledFormError(f"the compile record is malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class CompiledModel:
    """What a worker loads to serve a compiled form: picklable, sent once at start.

    `name` is the model name its predictions carry: the learner's (`model.worker.model_name`
    of the version's model.pkl), so that records and replies name the version, whatever form
    answers. `sha256` is the compiled file's, from the card; the worker checks the bytes.
    """

    backend: str  # FORM_FP32 or FORM_INT8
    path: Path
    sha256: str
    spec: PreprocessSpec
    name: str
    labels: tuple[str, ...]


def choose_form(
    record: CompileRecord | None, backend: str, *, fastai_ok: bool = True
) -> tuple[CompiledForm | None, str | None]:
    """Which compiled form to serve for the `INFERENCE_BACKEND` setting `backend`, and a line
    for the log when the choice is not what was asked for (None when it is).

    auto: the fastest verified form (by the one-image time measured at compile time), or
    fastai when it measured faster or nothing is verified; onnx: the fp32 form; onnx-int8:
    the int8 form when it was kept, else fp32. None: serve the learner on fastai. Without
    fastai (`fastai_ok` False) "fastai" and "auto" both mean the fastest compiled form.
    """
    if not fastai_ok and backend == "fastai":
        backend = "auto"
    if backend == "fastai":
        return None, None
    if record is None:
        return None, "this version was not compiled yet: serving it on fastai"
    if not record.ok:
        return None, f"no verified compiled form ({record.reason or 'unknown reason'})"
    fp32 = record.forms[FORM_FP32]
    int8 = record.forms.get(FORM_INT8)
    if backend == FORM_FP32:
        return fp32, None
    if backend == FORM_INT8:
        if int8 is None:
            return fp32, f"no int8 form ({record.int8 or 'not made'}): serving fp32"
        return int8, None
    candidates = [form for form in (fp32, int8) if form is not None]
    best = min(candidates, key=lambda f: f.ms_per_image if f.ms_per_image is not None else 1e9)
    fastai_ms = record.fastai_ms_per_image
    if (
        fastai_ok
        and fastai_ms is not None
        and best.ms_per_image is not None
        and fastai_ms < best.ms_per_image
    ):
        return None, (
            f"fastai measured faster ({fastai_ms:.1f} ms vs {best.ms_per_image:.1f} ms an image)"
        )
    return best, None


def describe(record: CompileRecord | None) -> list[str]:
    """Lines for `training models` and /models: each form and what was measured."""
    if record is None:
        return ["compiled: not yet (python -m training compile VERSION)"]
    if not record.ok:
        return [f"compiled: no, serves on fastai: {record.reason}"]
    lines = []
    for kind in (FORM_FP32, FORM_INT8):
        form = record.forms.get(kind)
        if form is None:
            continue
        parts = [f"{kind}: {form.file} ({form.file_size / 1e6:.1f} MB)"]
        if form.ms_per_image is not None:
            parts.append(f"{form.ms_per_image:.1f} ms/image")
        if form.accuracy is not None:
            parts.append(f"accuracy {form.accuracy:.1%}")
        if form.agreement is not None:
            parts.append(f"agrees with fp32 on {form.agreement:.1%}")
        lines.append(", ".join(parts))
    if FORM_INT8 not in record.forms:
        lines.append(f"onnx-int8: {record.int8 or 'not made'}")
    fastai = ["fastai"]
    if record.fastai_ms_per_image is not None:
        fastai.append(f"{record.fastai_ms_per_image:.1f} ms/image")
    if record.fastai_accuracy is not None:
        fastai.append(f"accuracy {record.fastai_accuracy:.1%}")
    lines.append(", ".join(fastai))
    return lines


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise CompiledFormError(f"{key} must be an integer")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise CompiledFormError(f"{key} must be a string")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _optional_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CompiledFormError(f"{key} must be a number")
    return float(value)


def _triple(data: Mapping[str, Any], key: str) -> tuple[float, float, float]:
    value = data[key]
    if (
        not isinstance(value, Sequence)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise CompiledFormError(f"{key} must be three numbers")
    return (float(value[0]), float(value[1]), float(value[2]))
