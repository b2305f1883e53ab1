"""The CLIP model: which backend runs it, loading once per process, decoding and normalising.

Two backends give matching vectors (checked when a model is exported): `torch_clip`
(open_clip in torch: the reference, and the GPU path) and `onnx_clip` (ONNX Runtime on the
CPU, fp32 or int8, from files exported once per model by `onnx_export`). Nothing outside
these four modules imports open_clip, torch or onnxruntime.
"""

import hashlib
import importlib.util
import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image as PILImage
from PIL import ImageOps

from gallery.errors import Unavailable
from gallery.pixels import displayable

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
RANDOM_WEIGHTS = "random"
BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("fp32", "int8")


class ModelWeightsUnavailable(Unavailable):
    """The configured weights cannot be loaded (offline, missing file, unknown tag)."""


class BackendUnavailable(ModelWeightsUnavailable):
    """The model cannot run on the requested backend (export failed or did not match torch)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str = ""
    weights_file: str = ""
    random_seed: int = 0

    @classmethod
    def from_settings(cls) -> "ModelSpec":
        return cls(
            name=settings.CLIP_MODEL,
            pretrained=settings.CLIP_PRETRAINED,
            weights_file=settings.CLIP_WEIGHTS_FILE,
            random_seed=settings.CLIP_RANDOM_SEED,
        )

    @property
    def model_id(self) -> str:
        """Names the architecture and the exact weights; the registry's key for a model.

        A weights file is named by its content, so a copy under another name is the same
        model and a different file under the same name is not.
        """
        if self.weights_file:
            return f"{self.name}:sha256:{weights_sha256(self.weights_file)[:16]}"
        if self.pretrained == RANDOM_WEIGHTS:
            return f"{self.name}:random-seed{self.random_seed}"
        return f"{self.name}:{self.pretrained}"


_file_hashes: dict[tuple, str] = {}


def weights_sha256(path: str) -> str:
    """The SHA-256 of a weights file, computed once per process while the file is unchanged."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        raise ModelWeightsUnavailable(
            f"CLIP_WEIGHTS_FILE={path} does not exist or cannot be read. Point it at an "
            "open_clip checkpoint (.bin, .pt or .safetensors)."
        ) from None
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


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


class ImageEncoding:
    """What both backends share: decoding files on a thread pool, then `encode_pixels`."""

    def preprocess(self, image: PILImage.Image):
        raise NotImplementedError

    def encode_pixels(self, pixels: list) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, images: list[PILImage.Image]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per image."""
        return self.encode_pixels([self.preprocess(image) for image in images])

    def prepare_image_files(self, paths) -> list:
        """Model-ready pixels for these files, or the exception each one raised.

        Decoding runs on a thread pool (Pillow releases the GIL while decoding), so a batch
        of large JPEGs decodes on every core instead of one.
        """
        return list(decoding_pool().map(self._prepare_file, paths))

    def _prepare_file(self, path):
        try:
            return self.preprocess(open_image_for_encoding(path, self.image_size))
        except Exception as error:  # reported per image by the caller
            return error


def normalised(batches: list[np.ndarray], dimensions: int) -> np.ndarray:
    if not batches:
        return np.zeros((0, dimensions), dtype=np.float32)
    vectors = np.concatenate(batches).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_encoders: dict[ModelSpec, ImageEncoding] = {}
_encoder_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def decoding_pool() -> ThreadPoolExecutor:
    """Threads for decoding and resizing images: Pillow releases the GIL while it works, so
    a batch of large JPEGs uses every core."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
    return _pool


def cannot_load_message(spec: ModelSpec, error: Exception) -> str:
    return (
        f"Could not load CLIP weights for {spec.name} "
        f"({spec.weights_file or spec.pretrained}): {error}\n"
        "Without internet access, download the checkpoint on another machine "
        "(open_clip_pytorch_model.bin from the model's Hugging Face page) and set "
        "CLIP_WEIGHTS_FILE=/path/to/it, or pre-fill the Hugging Face cache "
        "(HF_HOME). For tests and benchmarks, CLIP_PRETRAINED=random builds "
        "seeded random weights."
    )


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


def open_image_for_encoding(path, target_size: int | None = None) -> PILImage.Image:
    """Open an image file small and upright: JPEG draft decoding, then EXIF orientation.

    Real photos are 12+ megapixels; decoding them at 1/2..1/8 scale is faster and the model
    only sees a few hundred pixels anyway.
    """
    size = target_size or 256
    image = PILImage.open(path)
    # draft() picks the smallest JPEG scale (1/2..1/8) still at least this size.
    image.draft("RGB", (size, size))
    image = ImageOps.exif_transpose(image)
    return displayable(image)
