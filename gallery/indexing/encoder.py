"""The CLIP model: which backend runs it (CLIP_BACKEND), loading each model once per process.

Two backends give matching vectors (checked when a model is exported): `torch_clip`
(open_clip in torch: the reference, and the GPU path) and `onnx_clip` (ONNX Runtime on the
CPU, fp32 or int8, from files exported once per model by `onnx_export`). Both build on
`encoder_base` and import nothing of this module, which chooses between them. Nothing outside
these modules imports open_clip, torch or onnxruntime.
"""

import importlib.util
import json
import logging
import os
import sys
import threading
from pathlib import Path

from django.conf import settings

from gallery.indexing.encoder_base import (
    MODEL_CONFIG_DIR,
    BackendUnavailable,
    ImageEncoding,
    ModelSpec,
    ModelWeightsUnavailable,
    cannot_load_message,
)

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("fp32", "int8")


def architecture_dimensions(name: str) -> int:
    """The vector size an open_clip architecture produces, read from its configuration file
    (without importing open_clip, which would load torch into a lean web process)."""
    package = importlib.util.find_spec("open_clip")
    folders = [MODEL_CONFIG_DIR]
    if package and package.submodule_search_locations:
        folders += [Path(folder) / "model_configs" for folder in package.submodule_search_locations]
    for folder in folders:
        config = folder / f"{name}.json"
        if config.is_file():
            embed_dim = json.loads(config.read_text()).get("embed_dim")
            if embed_dim:
                return int(embed_dim)
    raise ModelWeightsUnavailable(
        f"Unknown CLIP model {name!r}. Set CLIP_MODEL to one of open_clip's "
        "architectures, e.g. ViT-B-32-256, ViT-L-14 or ViT-SO400M-16-SigLIP2-384."
    )


_encoders: dict[ModelSpec, ImageEncoding] = {}
_encoder_lock = threading.Lock()


def configured_backend() -> str:
    """The backend CLIP_BACKEND names; `auto` is ONNX Runtime on the CPU and torch on a GPU.

    Whether there is a GPU is read from the NVIDIA driver's device node and torch's build
    information, without importing torch: a web process on the CPU should not load it just
    to find out.
    """
    backend = settings.CLIP_BACKEND
    if backend != "auto":
        return backend
    if settings.CLIP_DEVICE == "cuda" or (
        settings.CLIP_DEVICE == "auto" and os.path.exists("/dev/nvidiactl") and _torch_has_cuda()
    ):
        return "torch"
    return "onnx"


def _torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, read from torch/version.py without
    importing torch (a CPU-only torch on a GPU host would run the slow path)."""
    package = importlib.util.find_spec("torch")
    for folder in (package.submodule_search_locations or []) if package else []:
        version = Path(folder) / "version.py"
        if version.is_file():
            for line in version.read_text().splitlines():
                if line.startswith("cuda"):
                    return "None" not in line.split("=", 1)[-1]
    return False


def get_encoder(spec: ModelSpec | None = None, *, image_tower: bool = True) -> ImageEncoding:
    """The process's encoder for this model (the configured one by default), loaded once.

    A text-only encoder is replaced by a full one the first time an image needs encoding.
    """
    spec = spec or ModelSpec.from_settings()
    with _encoder_lock:
        loaded = _encoders.get(spec)
        if loaded is None or (image_tower and not loaded.has_image_tower):
            try:
                _encoders[spec] = _load(spec, image_tower=image_tower)
            except ModelWeightsUnavailable:
                raise
            except Exception as error:  # open_clip/huggingface errors: offline, bad file
                raise ModelWeightsUnavailable(cannot_load_message(spec, error)) from error
            clip = _encoders[spec]
            logger.info(
                "Loaded CLIP model %s (%s) with %s %s on %s",
                spec.name,
                "image and text" if image_tower else "text only",
                clip.backend,
                clip.precision,
                clip.device,
            )
        return _encoders[spec]


def _load(spec: ModelSpec, *, image_tower: bool) -> ImageEncoding:
    backend = configured_backend()
    if backend == "onnx":
        from gallery.indexing import onnx_clip

        try:
            return onnx_clip.OnnxClipEncoder(
                spec,
                precision=settings.CLIP_PRECISION,
                batch_size=settings.ENCODE_BATCH_SIZE,
                threads=settings.ENCODER_THREADS,
                image_tower=image_tower,
            )
        except BackendUnavailable as error:
            if settings.CLIP_BACKEND == "onnx":
                raise
            # auto: torch is always there and gives the reference vectors.
            logger.warning("%s Falling back to torch.", error)
    return load_torch_encoder(spec, image_tower=image_tower)


def prepare_model_files(spec: ModelSpec) -> str:
    """Export the model for the configured backend if it needs files that are not there yet,
    trying again an export that failed before. Returns a warning when `auto` will fall back
    to torch for this model; raises when `onnx` was asked for and cannot be had."""
    if configured_backend() != "onnx":
        return ""
    from gallery.indexing import onnx_clip

    try:
        onnx_clip.exported_files(spec, settings.CLIP_PRECISION, retry_failed=True)
    except BackendUnavailable as error:
        if settings.CLIP_BACKEND == "onnx":
            raise
        logger.warning("%s Processes will use torch for this model.", error)
        return f"{error} Processes will use torch for this model."
    return ""


def load_torch_encoder(spec: ModelSpec, *, image_tower: bool = True, device: str = ""):
    from gallery.indexing import torch_clip

    torch_clip.set_threads(settings.ENCODER_THREADS)
    return torch_clip.ClipEncoder(
        spec,
        device=device or settings.CLIP_DEVICE,
        batch_size=settings.ENCODE_BATCH_SIZE,
        image_tower=image_tower,
        cache_dir=settings.CLIP_MODEL_CACHE_DIR,
    )


def loaded_encoders() -> list[dict]:
    """What this process holds: each loaded model, its backend, towers and threads."""
    with _encoder_lock:
        return [
            {
                "model": spec.name,
                "weights": spec.weights_file or spec.pretrained,
                "backend": clip.backend,
                "precision": clip.precision,
                "towers": "image+text" if clip.has_image_tower else "text",
                "threads": clip.threads,
            }
            for spec, clip in _encoders.items()
        ]


def torch_imported() -> bool:
    return "torch" in sys.modules


def release_encoders(*, keep) -> None:
    """Drop loaded models other than these (a retired model's weights are not needed)."""
    with _encoder_lock:
        for spec in [spec for spec in _encoders if spec not in set(keep)]:
            del _encoders[spec]
