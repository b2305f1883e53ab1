"""The CLIP model: loading once per process, preprocessing, batching and L2 normalisation.

Nothing else in the project imports open_clip or torch.
"""

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image as PILImage
from PIL import ImageOps

from gallery.pixels import displayable

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
RANDOM_WEIGHTS = "random"


class ModelWeightsUnavailable(RuntimeError):
    """The configured weights cannot be loaded (offline, missing file, unknown tag)."""


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
    """The vector size an open_clip architecture produces, read from its configuration."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    config = open_clip.get_model_config(name)
    if not config or "embed_dim" not in config:
        raise ModelWeightsUnavailable(
            f"Unknown CLIP model {name!r}. Set CLIP_MODEL to one of open_clip's "
            "architectures, e.g. ViT-B-32-256, ViT-L-14 or ViT-SO400M-16-SigLIP2-384."
        )
    return int(config["embed_dim"])


class ClipEncoder:
    """One loaded open_clip model with its image transform and tokenizer.

    Without `image_tower` only the text tower is kept: a web process answering text queries
    does not hold the image tower's weights (about 350 MB in fp32 for ViT-B/32).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        batch_size: int = 32,
        *,
        image_tower: bool = True,
    ):
        import open_clip
        import torch

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        self.spec = spec
        self.batch_size = batch_size
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        if spec.name not in open_clip.list_models():
            raise ModelWeightsUnavailable(
                f"Unknown CLIP model {spec.name!r}. Set CLIP_MODEL to one of open_clip's "
                "architectures, e.g. ViT-B-32-256 or ViT-B-32."
            )
        if spec.pretrained == RANDOM_WEIGHTS and not spec.weights_file:
            # Seeded so every process (web, each worker, tests) builds the same weights.
            torch.manual_seed(spec.random_seed)
            pretrained = None
        else:
            pretrained = self._pretrained_source(open_clip)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            spec.name,
            pretrained=pretrained,
            device=self.device,
            cache_dir=settings.CLIP_MODEL_CACHE_DIR,
        )
        self.model.eval()
        if not image_tower:
            self.model.visual = None
        self.has_image_tower = image_tower
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        self.image_size = _input_size(self.preprocess)
        self.dimensions = 0
        self.dimensions = self.encode_texts([""]).shape[1]

    def _pretrained_source(self, open_clip) -> str:
        spec = self.spec
        if spec.weights_file:
            path = Path(spec.weights_file).expanduser()
            if not path.is_file():
                raise ModelWeightsUnavailable(
                    f"CLIP_WEIGHTS_FILE={spec.weights_file} does not exist. Point it at an "
                    f"open_clip checkpoint (.bin, .pt or .safetensors) for {spec.name}."
                )
            return str(path)
        if not spec.pretrained:
            raise ModelWeightsUnavailable(
                "No CLIP weights configured: set CLIP_PRETRAINED to a pretrained tag, "
                "CLIP_WEIGHTS_FILE to a local checkpoint, or CLIP_PRETRAINED=random for tests."
            )
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        if spec.pretrained not in tags:
            raise ModelWeightsUnavailable(
                f"open_clip has no pretrained tag {spec.pretrained!r} for {spec.name}; "
                f"known tags: {', '.join(tags) or 'none'}."
            )
        return spec.pretrained

    def encode_images(self, images: list[PILImage.Image]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per image."""
        return self.encode_pixels([self.preprocess(displayable(image)) for image in images])

    def prepare_image_files(self, paths) -> list:
        """Model-ready pixel tensors for these files, or the exception each one raised.

        Decoding runs on a thread pool (Pillow releases the GIL while decoding), so a batch
        of large JPEGs decodes on every core instead of one.
        """
        return list(_decoding_pool().map(self._prepare_file, paths))

    def _prepare_file(self, path):
        try:
            return self.preprocess(open_image_for_encoding(path, self.image_size))
        except Exception as error:  # reported per image by the caller
            return error

    def encode_pixels(self, pixels: list) -> np.ndarray:
        """L2-normalised vectors for tensors made by `prepare_image_files` or `preprocess`."""
        import torch

        if not self.has_image_tower:
            raise RuntimeError("This encoder was loaded for text only (image_tower=False).")

        batches = []
        for start in range(0, len(pixels), self.batch_size):
            batch = torch.stack(pixels[start : start + self.batch_size]).to(self.device)
            with torch.inference_mode():
                batches.append(self.model.encode_image(batch).float().cpu())
        return _normalised(batches, self.dimensions)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        import torch

        batches = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size])
            with torch.inference_mode():
                batches.append(self.model.encode_text(tokens.to(self.device)).float().cpu())
        return _normalised(batches, self.dimensions)


def _normalised(batches, dimensions: int) -> np.ndarray:
    if not batches:
        return np.zeros((0, dimensions), dtype=np.float32)
    vectors = np.concatenate([batch.numpy() for batch in batches]).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _input_size(preprocess) -> int:
    for step in getattr(preprocess, "transforms", []):
        size = getattr(step, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size:
            return int(max(size))
    return 224


_encoders: dict[ModelSpec, ClipEncoder] = {}
_encoder_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _decoding_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
    return _pool


def get_encoder(spec: ModelSpec | None = None, *, image_tower: bool = True) -> ClipEncoder:
    """The process's encoder for this model (the configured one by default), loaded once.

    A text-only encoder is replaced by a full one the first time an image needs encoding.
    """
    spec = spec or ModelSpec.from_settings()
    with _encoder_lock:
        loaded = _encoders.get(spec)
        if loaded is None or (image_tower and not loaded.has_image_tower):
            _apply_thread_budget()
            try:
                _encoders[spec] = ClipEncoder(
                    spec,
                    device=settings.CLIP_DEVICE,
                    batch_size=settings.ENCODE_BATCH_SIZE,
                    image_tower=image_tower,
                )
            except ModelWeightsUnavailable:
                raise
            except Exception as error:  # open_clip/huggingface errors: offline, bad file
                raise ModelWeightsUnavailable(
                    f"Could not load CLIP weights for {spec.name} "
                    f"({spec.weights_file or spec.pretrained}): {error}\n"
                    "Without internet access, download the checkpoint on another machine "
                    "(open_clip_pytorch_model.bin from the model's Hugging Face page) and set "
                    "CLIP_WEIGHTS_FILE=/path/to/it, or pre-fill the Hugging Face cache "
                    "(HF_HOME). For tests and benchmarks, CLIP_PRETRAINED=random builds "
                    "seeded random weights."
                ) from error
            logger.info(
                "Loaded CLIP model %s (%s) on %s",
                spec.name,
                "image and text" if image_tower else "text only",
                _encoders[spec].device,
            )
        return _encoders[spec]


def _apply_thread_budget() -> None:
    import torch

    if settings.ENCODER_THREADS > 0 and torch.get_num_threads() != settings.ENCODER_THREADS:
        torch.set_num_threads(settings.ENCODER_THREADS)


def loaded_encoders() -> list[dict]:
    """What this process holds: each loaded model, its towers, and torch's thread count."""
    import sys

    torch = sys.modules.get("torch")  # never imported just to answer this
    threads = torch.get_num_threads() if torch else None
    with _encoder_lock:
        return [
            {
                "model": spec.name,
                "weights": spec.weights_file or spec.pretrained,
                "towers": "image+text" if clip.has_image_tower else "text",
                "threads": threads,
            }
            for spec, clip in _encoders.items()
        ]


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
