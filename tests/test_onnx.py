"""The ONNX Runtime backend: exported once per model, checked against torch, without torch."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gallery.indexing import encoder, onnx_clip, torch_clip
from tests.images import image_bytes

SPEC = encoder.ModelSpec(name="vs-test-tiny", pretrained="random", random_seed=0)
TEXTS = ["a red bicycle leaning on a wall", "Café au lait, s'il vous plaît", "🐶 dog", ""]


def pictures():
    colours = [(255, 0, 0), (0, 128, 255), (30, 200, 60)]
    return [
        Image.open(io.BytesIO(image_bytes(color=colour, size=(90 + 40 * i, 70))))
        for i, colour in enumerate(colours)
    ]


@pytest.mark.parametrize(("precision", "min_cosine"), [("fp32", 0.999), ("int8", 0.99)])
def test_exported_model_gives_torchs_vectors(settings, tmp_path, precision, min_cosine):
    settings.MODEL_FILES_DIR = tmp_path
    exported = onnx_clip.OnnxClipEncoder(SPEC, precision=precision)
    reference = torch_clip.ClipEncoder(SPEC)

    assert exported.backend == "onnx" and exported.precision == precision
    assert np.array_equal(exported.tokenizer(TEXTS), reference.tokenizer(TEXTS).numpy())
    text_cosines = (exported.encode_texts(TEXTS) * reference.encode_texts(TEXTS)).sum(axis=1)
    image_cosines = (exported.encode_images(pictures()) * reference.encode_images(pictures())).sum(
        axis=1
    )
    assert text_cosines.min() >= min_cosine and image_cosines.min() >= min_cosine
    folder, manifest = onnx_clip.exported_files(SPEC, precision)
    assert folder == tmp_path / "vs-test-tiny_random-seed0"
    assert manifest["model_id"] == SPEC.model_id and manifest["dimensions"] == 512
    assert manifest["precisions"][precision]["image_min_cosine"] >= min_cosine
    assert not list(folder.glob("*.partial"))


def test_concurrent_processes_export_a_model_once(tmp_path):
    script = (
        "import django; django.setup();"
        "from gallery.indexing import encoder, onnx_clip;"
        "exports = [];"
        "export = onnx_clip._export_in_child_process;"
        "onnx_clip._export_in_child_process = lambda *a: exports.append(export(*a));"
        "spec = encoder.ModelSpec(name='vs-test-tiny', pretrained='random', random_seed=3);"
        "folder, manifest = onnx_clip.exported_files(spec, 'int8');"
        "print(sum(exports), manifest['precisions']['int8']['text'])"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "searchsite.settings",
        "MODEL_FILES_DIR": str(tmp_path),
    }
    processes = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=300)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert sorted(int(output[0]) for output in outputs) == [0, 0, 1]
    assert {output[1] for output in outputs} == {"text.int8.onnx"}
    folder = tmp_path / "vs-test-tiny_random-seed3"
    assert sorted(path.name for path in folder.glob("*.onnx")) == [
        "image.fp32.onnx",
        "image.int8.onnx",
        "text.fp32.onnx",
        "text.int8.onnx",
    ]


def test_a_model_that_cannot_load_fails_export_with_instructions(settings, tmp_path):
    settings.MODEL_FILES_DIR = tmp_path
    spec = encoder.ModelSpec(name="ViT-B-32-256", pretrained="datacomp_s34b_b86k")
    with pytest.raises(encoder.ModelWeightsUnavailable) as failure:
        onnx_clip.exported_files(spec, "fp32")
    assert "CLIP_WEIGHTS_FILE" in str(failure.value)
    assert not (tmp_path / "ViT-B-32-256_datacomp_s34b_b86k" / "manifest.json").exists()


def test_the_onnx_backend_never_imports_torch(tmp_path):
    script = (
        "import sys, django; django.setup();"
        "from gallery.indexing import encoder;"
        "clip = encoder.get_encoder();"
        "clip.encode_texts(['a cat']); clip.encode_images([__import__('PIL.Image').Image.new("
        "'RGB', (80, 60))]);"
        "print(clip.backend, 'torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "searchsite.settings",
        "CLIP_BACKEND": "onnx",
        "MODEL_FILES_DIR": str(tmp_path),
    }
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert output == ["onnx", "False", "False"]
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["exported_with"]["onnxruntime"]  # the export ran, in its own process


def test_int8_vectors_do_not_depend_on_their_batch_mates(settings, tmp_path):
    settings.MODEL_FILES_DIR = tmp_path
    clip = onnx_clip.OnnxClipEncoder(SPEC, precision="int8", batch_size=8)
    first, *others = pictures()
    alone = clip.encode_images([first])[0]
    in_a_batch = clip.encode_images([first, *others])[0]
    np.testing.assert_allclose(alone, in_a_batch, atol=1e-6)
    np.testing.assert_allclose(
        clip.encode_texts(["beach"])[0],
        clip.encode_texts(["beach", "sunset", "people"])[0],
        atol=1e-6,
    )


def test_a_failed_export_is_not_retried_by_every_process_until_prepare_models(settings, tmp_path):
    settings.MODEL_FILES_DIR = tmp_path
    spec = encoder.ModelSpec(name="vs-test-tiny", pretrained="random", random_seed=4)
    folder = onnx_clip.model_files_dir(spec)
    marker = onnx_clip.failure_marker(folder, "int8")
    marker.write_text(json.dumps({"error": "int8 ONNX vectors differ from torch's"}))

    with pytest.raises(encoder.BackendUnavailable, match="failed earlier.*prepare_models"):
        onnx_clip.exported_files(spec, "int8")
    assert not folder.exists()  # nothing was exported again
    settings.CLIP_BACKEND = "auto"  # auto runs the model in torch meanwhile
    assert encoder.get_encoder(spec, image_tower=False).backend == "torch"
    encoder.release_encoders(keep=[])

    assert encoder.prepare_model_files(spec) == ""  # tries again, and succeeds this time
    assert not marker.exists()
    assert encoder.get_encoder(spec, image_tower=False).backend == "onnx"
    encoder.release_encoders(keep=[])
