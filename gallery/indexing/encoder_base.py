"""What every CLIP backend shares, below both the backends and `encoder` (which chooses one):
the model's description (ModelSpec), the encoding base class and the errors of loading.

Imports no backend, so `torch_clip` and `onnx_clip` import only this and `encoder` imports them.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image as PILImage

from gallery.errors import Unavailable
from gallery.pixels import decoding_pool, open_upright

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
RANDOM_WEIGHTS = "random"


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
            return self.preprocess(open_upright(path, self.image_size))
        except Exception as error:  # reported per image by the caller
            return error


def normalised(batches: list[np.ndarray], dimensions: int) -> np.ndarray:
    if not batches:
        return np.zeros((0, dimensions), dtype=np.float32)
    vectors = np.concatenate(batches).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
