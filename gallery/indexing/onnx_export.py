"""Exporting a model to ONNX once: both towers in fp32, int8 by dynamic quantization, the
tokenizer and the preprocessing, each checked against torch on probe inputs.

Runs as `python -m gallery.indexing.onnx_export` in a child process started by
`onnx_clip.exported_files` under a file lock, so the torch model it loads never stays in a
web or worker process. Needs no network beyond what loading the weights needs.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image as PILImage

from gallery.indexing.encoder_base import (
    BackendUnavailable,
    ModelSpec,
    ModelWeightsUnavailable,
    cannot_load_message,
)
from gallery.indexing.onnx_clip import (
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_WEIGHTS_UNAVAILABLE,
    EXPORT_TIMEOUT_SECONDS,
    MANIFEST_NAME,
    RESAMPLING,
    OnnxClipEncoder,
    failure_marker,
    preprocess_pixels,
    read_manifest,
)

# How close the exported model's vectors must be to torch's on the probe inputs. fp32 differs
# only by operator order; int8 (weights 8-bit, activations quantized on the fly) measured
# 0.9998-0.9999 on random ViT-B/32 weights with unsigned 8-bit weights, 0.9956 with signed
# ones (AVX2 without VNNI saturates u8 x s8 products).
MIN_COSINE = {"fp32": 0.999, "int8": 0.99}
OPSET = 17
PROBE_TEXTS = [
    "",
    "a photo of a cat",
    "A RED bicycle, leaning on a wall!!",
    "café crème brûlée à la carte",
    "東京タワーの夜景",
    "emoji 🐶🐱 and &amp; escaped &lt;html&gt;",
    "numbers 12345, 3.14 and 1st 2nd",
    "it's, we're, they'll, I'd, you've",
    "   spaced\tout\n\ntext   ",
    " ".join(f"word{index}" for index in range(120)),  # longer than the context
]
PROBE_IMAGE_SIZES = [(64, 48), (300, 200), (200, 333), (640, 480), (257, 256)]


def probe_images() -> list[PILImage.Image]:
    rng = np.random.default_rng(0)
    images = []
    for width, height in PROBE_IMAGE_SIZES:
        gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
        noise = rng.integers(0, 64, size=(height, width, 3))
        images.append(PILImage.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8)))
    return images


def export(spec: ModelSpec, folder: Path, precision: str, *, cache_dir=None) -> dict:
    from gallery.indexing.torch_clip import ClipEncoder

    started = time.monotonic()
    try:
        reference = ClipEncoder(spec, device="cpu", batch_size=8, cache_dir=cache_dir)
    except ModelWeightsUnavailable:
        raise
    except Exception as error:  # open_clip/huggingface errors: offline, bad file
        raise ModelWeightsUnavailable(cannot_load_message(spec, error)) from error
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder) or _describe(reference, folder)
    if "fp32" not in manifest["precisions"]:
        _export_graphs(reference, folder)
        manifest["precisions"]["fp32"] = {"text": "text.fp32.onnx", "image": "image.fp32.onnx"}
    if precision == "int8" and "int8" not in manifest["precisions"]:
        _quantize(folder)
        manifest["precisions"]["int8"] = {"text": "text.int8.onnx", "image": "image.int8.onnx"}
    for checked in [precision] if precision == "fp32" else ["fp32", precision]:
        try:
            manifest["precisions"][checked].update(_agreement(reference, folder, manifest, checked))
        except BackendUnavailable:
            del manifest["precisions"][checked]
            if manifest["precisions"]:  # fp32 passed: keep it for CLIP_PRECISION=fp32
                _write_manifest(folder, manifest)
            raise
    manifest["export_seconds"] = round(time.monotonic() - started, 1)
    _write_manifest(folder, manifest)
    return manifest


def _describe(reference, folder: Path) -> dict:
    """The tokenizer and preprocessing as data, refused when they are not what onnx_clip does."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = reference.tokenizer
    if not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None:
        raise BackendUnavailable(
            f"{reference.spec.name} uses a tokenizer the ONNX backend does not reproduce "
            f"({type(tokenizer).__name__}); set CLIP_BACKEND=torch for this model."
        )
    config = dict(reference.model.visual.preprocess_cfg)
    if config.get("resize_mode", "shortest") not in ("shortest", "squash") or (
        config.get("interpolation", "bicubic") not in RESAMPLING
    ):
        raise BackendUnavailable(
            f"{reference.spec.name} preprocesses images in a way the ONNX backend does not "
            f"reproduce ({config}); set CLIP_BACKEND=torch for this model."
        )
    _write_bpe_tokenizer(tokenizer, folder / "tokenizer.json")
    size = config["size"]
    return {
        "model_id": reference.spec.model_id,
        "architecture": reference.spec.name,
        "dimensions": reference.dimensions,
        "preprocess": {
            "size": int(size if isinstance(size, int) else max(size)),
            "mean": list(config["mean"]),
            "std": list(config["std"]),
            "interpolation": config.get("interpolation", "bicubic"),
            "resize_mode": config.get("resize_mode", "shortest"),
        },
        "tokenizer": {
            "file": "tokenizer.json",
            "context_length": tokenizer.context_length,
            "start_id": tokenizer.sot_token_id,
            "end_id": tokenizer.eot_token_id,
            "trim_padding": can_trim_padding(reference.model),
        },
        "precisions": {},
        "exported_with": _versions(),
    }


def _write_bpe_tokenizer(tokenizer, path: Path) -> None:
    """open_clip's BPE vocabulary and merges as a `tokenizers` file (as transformers'
    CLIPConverter builds it; the cleaning step stays in onnx_clip.clean_text)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    bpe = Tokenizer(
        models.BPE(
            vocab=dict(tokenizer.encoder),
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
        )
    )
    words = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.add_special_tokens(["<start_of_text>", "<end_of_text>"])
    bpe.save(str(path))


def _export_graphs(reference, folder: Path) -> None:
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    class TrimmedTextTower(TextTower):
        """CLIP's text tower on tokens cut after the longest text's end token.

        The mask is causal and the end token's output is the text's vector, so the padding
        after it changes nothing; cutting it spares most of the work (a 9-token query runs
        9 positions, not 77). open_clip's encode_text always runs the full context, so this
        is encode_text with the positions and the mask sliced to the input's length.
        """

        def forward(self, tokens):
            model = self.model
            length = tokens.shape[1]
            x = model.token_embedding(tokens) + model.positional_embedding[:length]
            mask = model.attn_mask[:length, :length]
            for block in model.transformer.resblocks:
                x = x + block.ls_1(causal_attention(block.attn, block.ln_1(x), mask))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type)
            if isinstance(model.text_projection, torch.nn.Linear):
                return model.text_projection(x)
            return x @ model.text_projection

    def causal_attention(attention, x, mask):
        """nn.MultiheadAttention's computation with the length left as -1 in every reshape:
        traced through torch's own, the example's length became a constant of the graph."""
        heads = attention.num_heads
        head_dim = attention.embed_dim // heads
        qkv = torch.nn.functional.linear(x, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = qkv.reshape(x.shape[0], -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q * head_dim**-0.5) @ k.transpose(-2, -1) + mask, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(x.shape[0], -1, attention.embed_dim)
        return attention.out_proj(context)

    class ImageTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixels):
            return self.model.encode_image(pixels)

    from open_clip.transformer import text_global_pool

    size = reference.image_size
    tokens = reference.tokenizer(["a photo", "b"])
    if can_trim_padding(reference.model):
        # An example shorter than the context, so the length is traced as a variable.
        text_tower, tokens = TrimmedTextTower(reference.model), tokens[:, :8]
    else:
        text_tower = TextTower(reference.model)
    towers = [
        (text_tower, tokens, "tokens", "text", {0: "batch", 1: "length"}),
        (
            ImageTower(reference.model),
            torch.zeros(2, 3, size, size),
            "pixels",
            "image",
            {0: "batch"},
        ),
    ]
    for tower, example, input_name, part, input_axes in towers:
        partial = folder / f"{part}.fp32.onnx.partial"
        # Not under inference_mode: there nn.MultiheadAttention takes a fused fast path
        # (aten::_native_multi_head_attention) that has no ONNX export.
        torch.onnx.export(
            tower,
            (example,),
            str(partial),
            input_names=[input_name],
            output_names=["vectors"],
            dynamic_axes={input_name: input_axes, "vectors": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles CLIP
        )
        os.replace(partial, folder / f"{part}.fp32.onnx")


def can_trim_padding(model) -> bool:
    """Whether the text tower is open_clip's plain CLIP one (a causal mask, pooled at the end
    token, batch-first residual attention blocks), which TrimmedTextTower reproduces."""
    import torch

    transformer = getattr(model, "transformer", None)
    return (
        hasattr(model, "token_embedding")
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "") == "argmax"
        and getattr(model, "text_projection", None) is not None
        and getattr(transformer, "batch_first", False)
        and all(
            isinstance(block.attn, torch.nn.MultiheadAttention)
            and block.attn.batch_first
            and block.attn.in_proj_weight is not None
            and not hasattr(block, "ln_1_kv")
            for block in transformer.resblocks
        )
    )


def _quantize(folder: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for part in ("text", "image"):
        partial = folder / f"{part}.int8.onnx.partial"
        quantize_dynamic(
            str(folder / f"{part}.fp32.onnx"),
            str(partial),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
        os.replace(partial, folder / f"{part}.int8.onnx")


def _agreement(reference, folder: Path, manifest: dict, precision: str) -> dict:
    """Run torch and the exported files on the same probe inputs, end to end; refuse
    files whose tokens, pixels or vectors differ."""
    exported = OnnxClipEncoder(
        reference.spec, precision=precision, batch_size=8, files=(folder, manifest)
    )
    tokens = exported.tokenizer(PROBE_TEXTS)
    if not np.array_equal(tokens, reference.tokenizer(PROBE_TEXTS).numpy()):
        mismatched = [
            text
            for text, row, expected in zip(
                PROBE_TEXTS, tokens, reference.tokenizer(PROBE_TEXTS).numpy(), strict=True
            )
            if not np.array_equal(row, expected)
        ]
        raise BackendUnavailable(f"The ONNX tokenizer differs from open_clip's on {mismatched}")
    images = probe_images()
    for image in images:
        ours = preprocess_pixels(image, manifest["preprocess"])
        theirs = reference.preprocess(image).numpy()
        if ours.shape != theirs.shape or np.abs(ours - theirs).max() > 1e-4:
            raise BackendUnavailable(
                f"The ONNX preprocessing differs from open_clip's on a {image.size} image."
            )
    text_cosine = _min_cosine(
        exported.encode_texts(PROBE_TEXTS), reference.encode_texts(PROBE_TEXTS)
    )
    image_cosine = _min_cosine(exported.encode_images(images), reference.encode_images(images))
    if min(text_cosine, image_cosine) < MIN_COSINE[precision]:
        raise BackendUnavailable(
            f"{precision} ONNX vectors differ from torch's: cosine {text_cosine:.4f} (text), "
            f"{image_cosine:.4f} (image), below {MIN_COSINE[precision]}."
        )
    return {"text_min_cosine": round(text_cosine, 5), "image_min_cosine": round(image_cosine, 5)}


def _min_cosine(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float((ours * theirs).sum(axis=1).min())


def _versions() -> dict:
    import onnxruntime
    import open_clip
    import torch

    return {
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _write_manifest(folder: Path, manifest: dict) -> None:
    partial = folder / f"{MANIFEST_NAME}.partial"
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, folder / MANIFEST_NAME)  # readers see the old manifest or the new one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--pretrained", default="")
    parser.add_argument("--weights-file", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=sorted(MIN_COSINE), default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    options = parser.parse_args(argv)
    if options.threads > 0:
        import torch

        torch.set_num_threads(options.threads)
    spec = ModelSpec(
        name=options.name,
        pretrained=options.pretrained,
        weights_file=options.weights_file,
        random_seed=options.seed,
    )
    marker = failure_marker(options.folder, options.precision)
    options.folder.parent.mkdir(parents=True, exist_ok=True)
    # The lock is held here, in the process that exports (and dies with its parent), not in
    # the parent: a parent killed mid-export cannot leave an export running unlocked.
    with FileLock(f"{options.folder}.lock", timeout=EXPORT_TIMEOUT_SECONDS):
        manifest = read_manifest(options.folder)
        if manifest and options.precision in manifest["precisions"]:
            # Another process exported it while this one waited for the lock.
            print(json.dumps({"precisions": manifest["precisions"], "exported": False}))
            return 0
        try:
            manifest = export(spec, options.folder, options.precision, cache_dir=options.cache_dir)
        except BackendUnavailable as error:
            marker.write_text(json.dumps({"error": str(error), "versions": _versions()}))
            print(json.dumps({"error": str(error)}))
            return EXIT_BACKEND_UNAVAILABLE
        except ModelWeightsUnavailable as error:
            print(json.dumps({"error": str(error)}))
            return EXIT_WEIGHTS_UNAVAILABLE
        marker.unlink(missing_ok=True)
    print(json.dumps({"precisions": manifest["precisions"], "exported": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
