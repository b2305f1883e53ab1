"""The encoders the offline tools set side by side: the torch fp32 reference and both ONNX
Runtime precisions, loaded for one model (bench_indexing's speed, evaluate's agreement)."""

from django.conf import settings

from gallery.indexing import encoder

# The reference first: every other encoder is compared with it.
COMPARED_ENCODERS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]


def load_compared_encoder(spec, backend: str, precision: str, batch_size: int):
    if backend == "torch":
        return encoder.load_torch_encoder(spec, device="cpu")
    from gallery.indexing import onnx_clip  # onnxruntime only when an ONNX encoder is compared

    return onnx_clip.OnnxClipEncoder(
        spec, precision=precision, batch_size=batch_size, threads=settings.ENCODER_THREADS
    )
