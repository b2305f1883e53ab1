"""The reference encoder: open_clip in torch (the GPU path, and the source of ONNX exports).

Imported only by `encoder` (when CLIP_BACKEND resolves to torch) and by `onnx_export`, so a
process serving with ONNX Runtime never loads torch (about 500 MB resident by itself). Builds on
`encoder_base` alone.
"""

from pathlib import Path

import numpy as np
import open_clip
import torch

from gallery.indexing.encoder_base import (
    MODEL_CONFIG_DIR,
    RANDOM_WEIGHTS,
    ImageEncoding,
    ModelSpec,
    ModelWeightsUnavailable,
    normalised,
)
from gallery.pixels import displayable

open_clip.add_model_config(MODEL_CONFIG_DIR)


class ClipEncoder(ImageEncoding):
    """One loaded open_clip model with its image transform and tokenizer.

    Without `image_tower` only the text tower is kept: a web process answering text queries
    does not hold the image tower's weights (about 350 MB in fp32 for ViT-B/32).
    """

    backend = "torch"
    precision = "fp32"

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        batch_size: int = 32,
        *,
        image_tower: bool = True,
        cache_dir: str | None = None,
    ):
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
            pretrained = pretrained_source(spec)
        self.model, _, self.transform = open_clip.create_model_and_transforms(
            spec.name, pretrained=pretrained, device=self.device, cache_dir=cache_dir
        )
        self.model.eval()
        if not image_tower:
            self.model.visual = None
        self.has_image_tower = image_tower
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        self.image_size = _input_size(self.transform)
        self.dimensions = 0
        self.dimensions = self.encode_texts([""]).shape[1]

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def preprocess(self, image):
        return self.transform(displayable(image))

    def encode_pixels(self, pixels: list) -> np.ndarray:
        """L2-normalised vectors for tensors made by `prepare_image_files` or `preprocess`."""
        if not self.has_image_tower:
            raise RuntimeError("This encoder was loaded for text only (image_tower=False).")
        batches = []
        for start in range(0, len(pixels), self.batch_size):
            batch = torch.stack(pixels[start : start + self.batch_size]).to(self.device)
            with torch.inference_mode():
                batches.append(self.model.encode_image(batch).float().cpu().numpy())
        return normalised(batches, self.dimensions)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        batches = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size])
            with torch.inference_mode():
                batches.append(self.model.encode_text(tokens.to(self.device)).float().cpu().numpy())
        return normalised(batches, self.dimensions)


def pretrained_source(spec: ModelSpec) -> str:
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


def set_threads(threads: int) -> None:
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def architecture_dimensions(name: str) -> int | None:
    config = open_clip.get_model_config(name)
    return int(config["embed_dim"]) if config and "embed_dim" in config else None


def _input_size(transform) -> int:
    for step in getattr(transform, "transforms", []):
        size = getattr(step, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size:
            return int(max(size))
    return 224
