"""CLIP on ONNX Runtime, the CPU backend. Imports neither torch nor open_clip.

The files come from `onnx_export`, run once per model in a child process under a file lock:
the text and image towers as separate graphs (fp32, and int8 by dynamic quantization), the
tokenizer as a Hugging Face `tokenizers` file and the preprocessing as numbers, each checked
against torch when made. A web process answering text queries opens only the text graph.
"""

import html
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import ftfy
import numpy as np
import onnxruntime
from django.conf import settings
from PIL import Image as PILImage
from tokenizers import Tokenizer

from gallery.indexing.encoder_base import (
    BackendUnavailable,
    ImageEncoding,
    ModelSpec,
    ModelWeightsUnavailable,
    normalised,
)
from gallery.pixels import displayable
from gallery.processes import end_with_parent

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# Exit codes of `python -m gallery.indexing.onnx_export`.
EXIT_WEIGHTS_UNAVAILABLE = 2
EXIT_BACKEND_UNAVAILABLE = 3
# Exporting ViT-L/14 and quantizing it takes a few minutes on 2 cores.
EXPORT_TIMEOUT_SECONDS = 1800
RESAMPLING = {"bicubic": PILImage.Resampling.BICUBIC, "bilinear": PILImage.Resampling.BILINEAR}


def model_files_dir(spec: ModelSpec) -> Path:
    """Where a model's exported files live, named by its registry id."""
    return Path(settings.MODEL_FILES_DIR) / re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model_id)


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def failure_marker(folder: Path, precision: str) -> Path:
    return folder.parent / f"{folder.name}.failed-{precision}.json"


def exported_files(
    spec: ModelSpec, precision: str, *, retry_failed: bool = False
) -> tuple[Path, dict]:
    """The folder and manifest of this model's ONNX files, exporting them first if needed.

    The export runs in a child process that holds the model's file lock, so concurrent
    processes (gunicorn workers, RQ workers) export once and the others find the manifest.
    An export that failed its checks is not tried again by every process: it says why at
    once until `prepare_models` (`retry_failed`) tries again.
    """
    folder = model_files_dir(spec)
    manifest = read_manifest(folder)
    if manifest and precision in manifest["precisions"]:
        return folder, manifest
    marker = failure_marker(folder, precision)
    if marker.exists() and not retry_failed:
        reason = json.loads(marker.read_text()).get("error", "")
        raise BackendUnavailable(
            f"The ONNX export of {spec.model_id} failed earlier: {reason} "
            "(`visual-search prepare_models` tries again)."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    _export_in_child_process(spec, folder, precision)
    manifest = read_manifest(folder)
    if not manifest or precision not in manifest["precisions"]:
        raise BackendUnavailable(f"The ONNX export of {spec.model_id} left no {precision} files.")
    return folder, manifest


def _export_in_child_process(spec: ModelSpec, folder: Path, precision: str) -> bool:
    """Run the export in its own interpreter: the torch model it needs is gone when it ends.
    Returns whether it exported (False: another process had done it meanwhile)."""
    logger.info("Exporting %s to ONNX (%s) in %s", spec.model_id, precision, folder)
    command = [
        sys.executable,
        "-m",
        "gallery.indexing.onnx_export",
        "--folder",
        str(folder),
        "--name",
        spec.name,
        "--pretrained",
        spec.pretrained,
        "--weights-file",
        spec.weights_file,
        "--seed",
        str(spec.random_seed),
        "--precision",
        precision,
        "--threads",
        str(settings.ENCODER_THREADS),
    ]
    if settings.CLIP_MODEL_CACHE_DIR:
        command += ["--cache-dir", settings.CLIP_MODEL_CACHE_DIR]
    try:
        finished = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=EXPORT_TIMEOUT_SECONDS,
            check=False,
            # An export whose parent was killed must not go on alone: it would hold the lock.
            preexec_fn=end_with_parent if sys.platform.startswith("linux") else None,
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(
            f"Exporting {spec.model_id} to ONNX took more than {EXPORT_TIMEOUT_SECONDS} s."
        ) from None
    if finished.returncode == 0:
        return bool(json.loads(finished.stdout.strip().splitlines()[-1]).get("exported"))
    try:  # the child's last line says why, as JSON
        reason = json.loads(finished.stdout.strip().splitlines()[-1])["error"]
    except (IndexError, KeyError, ValueError):
        lines = [line for line in finished.stderr.strip().splitlines() if line.strip()]
        reason = "\n".join(lines[-3:]) or f"exit code {finished.returncode}"
    if finished.returncode == EXIT_WEIGHTS_UNAVAILABLE:
        raise ModelWeightsUnavailable(reason)
    raise BackendUnavailable(f"Could not export {spec.model_id} to ONNX: {reason}")


def open_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(0, threads)  # 0: one per core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ClipTokenizer:
    """open_clip's CLIP tokenizer (clean, lower-case, byte-level BPE, start and end tokens,
    77 positions) without torch; the BPE runs in Hugging Face `tokenizers`."""

    def __init__(
        self,
        path: Path,
        *,
        context_length: int,
        start_id: int,
        end_id: int,
        trim_padding: bool = False,
    ):
        self.bpe = Tokenizer.from_file(str(path))
        self.context_length = context_length
        self.start_id = start_id
        self.end_id = end_id
        self.trim_padding = trim_padding

    def __call__(self, texts: list[str]) -> np.ndarray:
        tokens = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.bpe.encode(clean_text(text), add_special_tokens=False).ids
            ids = [self.start_id, *ids, self.end_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end_id
            tokens[row, : len(ids)] = ids
        return tokens

    def model_input(self, texts: list[str]) -> np.ndarray:
        """Tokens for the text graph: cut after the longest text's end token when the graph
        takes any length (see onnx_export.TrimmedTextTower)."""
        tokens = self(texts)
        if self.trim_padding and len(tokens):
            tokens = tokens[:, : int((tokens == self.end_id).argmax(axis=1).max()) + 1]
        return tokens


def clean_text(text: str) -> str:
    """open_clip's `_clean_lower`: fix mojibake, unescape HTML twice, squeeze spaces, lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def preprocess_pixels(image: PILImage.Image, config: dict) -> np.ndarray:
    """open_clip's eval transform in numpy: resize, centre crop, scale, normalise (CHW)."""
    image = displayable(image)
    size = int(config["size"])
    resample = RESAMPLING[config["interpolation"]]
    if config["resize_mode"] == "squash":
        image = image.resize((size, size), resample)
    else:  # "shortest", as torchvision's Resize(int) computes it
        width, height = image.size
        if width <= height:
            new_size = (size, int(size * height / width))
        else:
            new_size = (int(size * width / height), size)
        if new_size != image.size:
            image = image.resize(new_size, resample)
        left = int(round((new_size[0] - size) / 2.0))
        top = int(round((new_size[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    mean = np.asarray(config["mean"], dtype=np.float32)
    std = np.asarray(config["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1).copy()


class OnnxClipEncoder(ImageEncoding):
    """One exported model in ONNX Runtime sessions; the image graph only when asked for."""

    backend = "onnx"
    device = "cpu"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        precision: str = "fp32",
        batch_size: int = 32,
        threads: int = 0,
        image_tower: bool = True,
        files: tuple[Path, dict] | None = None,
    ):
        folder, manifest = files or exported_files(spec, precision)
        try:
            self._open(folder, manifest, spec, precision, batch_size, threads, image_tower)
        except Exception as error:  # a deleted or damaged graph, an older manifest
            raise BackendUnavailable(
                f"The ONNX files in {folder} cannot be used: {error}"
            ) from None

    def _open(self, folder, manifest, spec, precision, batch_size, threads, image_tower):
        graphs = manifest["precisions"][precision]
        self.spec = spec
        self.precision = precision
        self.batch_size = batch_size
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.dimensions = int(manifest["dimensions"])
        self.preprocess_config = manifest["preprocess"]
        self.image_size = int(self.preprocess_config["size"])
        tokenizer = manifest["tokenizer"]
        self.tokenizer = ClipTokenizer(
            folder / tokenizer["file"],
            context_length=tokenizer["context_length"],
            start_id=tokenizer["start_id"],
            end_id=tokenizer["end_id"],
            trim_padding=tokenizer.get("trim_padding", False),
        )
        self.text_session = open_session(folder / graphs["text"], threads)
        self.image_session = (
            open_session(folder / graphs["image"], threads) if image_tower else None
        )
        self.has_image_tower = image_tower
        # Dynamic quantization scales activations over the whole input, so in a batch an int8
        # vector would depend on its batch-mates; one item per run keeps vectors reproducible,
        # and is no slower on the CPU (ViT-B/32 int8: 6.2 img/s one by one, 6.4 in 32s).
        self.rows_per_run = 1 if precision == "int8" else batch_size

    def preprocess(self, image: PILImage.Image) -> np.ndarray:
        return preprocess_pixels(image, self.preprocess_config)

    def encode_pixels(self, pixels: list) -> np.ndarray:
        if self.image_session is None:
            raise RuntimeError("This encoder was loaded for text only (image_tower=False).")
        batches = [
            self.image_session.run(
                None, {"pixels": np.stack(pixels[start : start + self.rows_per_run])}
            )[0]
            for start in range(0, len(pixels), self.rows_per_run)
        ]
        return normalised(batches, self.dimensions)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        batches = [
            self.text_session.run(
                None,
                {"tokens": self.tokenizer.model_input(texts[start : start + self.rows_per_run])},
            )[0]
            for start in range(0, len(texts), self.rows_per_run)
        ]
        return normalised(batches, self.dimensions)
