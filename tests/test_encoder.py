"""The encoder: normalised, deterministic vectors; clear failures when weights are missing."""

import time

import numpy as np
import pytest

from gallery import pixels
from gallery.indexing import encoder, torch_clip
from tests.images import image_bytes


def pil_image(**kwargs):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(image_bytes(**kwargs)))


def test_image_and_text_vectors_are_l2_normalised_float32_512d():
    clip = encoder.get_encoder()
    images = clip.encode_images([pil_image(color=(255, 0, 0)), pil_image(color=(0, 0, 255))])
    texts = clip.encode_texts(["a red square", "a blue square", "a dog"])
    assert images.shape == (2, 512) and texts.shape == (3, 512)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(images[0], images[1])


def test_random_test_model_is_the_same_in_every_process():
    # A second encoder built from the same spec has identical weights (seeded).
    spec = encoder.ModelSpec(name="vs-test-tiny", pretrained="random", random_seed=0)
    first = torch_clip.ClipEncoder(spec).encode_texts(["a cat"])
    second = torch_clip.ClipEncoder(spec).encode_texts(["a cat"])
    np.testing.assert_array_equal(first, second)
    other_seed = torch_clip.ClipEncoder(
        encoder.ModelSpec(name="vs-test-tiny", pretrained="random", random_seed=1)
    ).encode_texts(["a cat"])
    assert not np.allclose(first, other_seed)


def test_model_id_names_model_and_weights():
    assert encoder.ModelSpec("ViT-B-32-256", "datacomp_s34b_b86k").model_id == (
        "ViT-B-32-256:datacomp_s34b_b86k"
    )
    assert encoder.ModelSpec.from_settings().model_id == "vs-test-tiny:random-seed0"


def test_weights_file_id_follows_the_files_bytes_not_its_name(tmp_path):
    original = tmp_path / "clip.bin"
    original.write_bytes(b"weights " * 1000)
    copy = tmp_path / "renamed-copy.pt"
    copy.write_bytes(original.read_bytes())
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    different = other_folder / "clip.bin"
    different.write_bytes(b"other weights " * 1000)

    def model_id(path):
        return encoder.ModelSpec("ViT-B-32", weights_file=str(path)).model_id

    assert model_id(original) == model_id(copy)
    assert model_id(original) != model_id(different)
    assert model_id(original).startswith("ViT-B-32:sha256:")
    original.write_bytes(b"changed weights " * 1000)  # the same path with new bytes is a new model
    assert model_id(original) != model_id(copy)


def test_missing_pretrained_weights_fail_fast_with_instructions(settings):
    settings.CLIP_MODEL = "ViT-B-32-256"
    settings.CLIP_PRETRAINED = "datacomp_s34b_b86k"
    started = time.monotonic()
    with pytest.raises(encoder.ModelWeightsUnavailable) as failure:
        encoder.get_encoder()
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert "CLIP_WEIGHTS_FILE" in message and "CLIP_PRETRAINED=random" in message


def test_missing_weights_file_is_named_in_the_error(settings, tmp_path):
    settings.CLIP_MODEL = "ViT-B-32"
    settings.CLIP_WEIGHTS_FILE = str(tmp_path / "missing.bin")
    with pytest.raises(encoder.ModelWeightsUnavailable, match="missing.bin does not exist"):
        encoder.get_encoder()


def test_unknown_model_and_tag_are_reported(settings):
    settings.CLIP_MODEL = "no-such-model"
    with pytest.raises(encoder.ModelWeightsUnavailable, match="Unknown CLIP model"):
        encoder.get_encoder()
    settings.CLIP_MODEL = "ViT-B-32"
    settings.CLIP_PRETRAINED = "no-such-tag"
    with pytest.raises(encoder.ModelWeightsUnavailable, match="no pretrained tag"):
        encoder.get_encoder()


def test_jpeg_is_decoded_at_reduced_size_and_upright(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    path.write_bytes(image_bytes(size=(2400, 1600), fmt="JPEG", exif=exif))
    opened = pixels.open_upright(path, target_size=128)
    width, height = opened.size
    assert height > width  # rotated upright
    assert max(width, height) <= 600  # draft mode decoded at 1/4 scale, not 2400 px


def test_up_gives_each_child_its_share_of_the_cores(monkeypatch):
    import os

    from searchsite.supervisor import thread_budget

    monkeypatch.delenv("ENCODER_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert thread_budget(2) == {
        "ENCODER_THREADS": "4",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
    }
    assert thread_budget(16)["ENCODER_THREADS"] == "1"
    monkeypatch.setenv("ENCODER_THREADS", "3")  # the operator's choice wins
    assert thread_budget(2)["ENCODER_THREADS"] == "3"


def _in_a_new_process(script: str, **env) -> list[str]:
    import os
    import subprocess
    import sys

    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "searchsite.settings", **env}
    environment.pop("OMP_NUM_THREADS", None)
    if not env.get("ENCODER_THREADS"):
        environment.pop("ENCODER_THREADS", None)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup();" + script],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_the_thread_budget_is_applied_to_torch_when_the_model_loads():
    script = (
        "import torch; from gallery.indexing import encoder;"
        "before = torch.get_num_threads(); encoder.get_encoder(image_tower=False);"
        "print(before, torch.get_num_threads())"
    )
    default = _in_a_new_process(script, CLIP_BACKEND="torch")
    budgeted = _in_a_new_process(script, CLIP_BACKEND="torch", ENCODER_THREADS="1")
    assert default[1] == default[0]  # without a budget, torch keeps its own default
    assert budgeted == [default[0], "1"]


def test_the_thread_budget_is_applied_to_onnx_runtime_sessions():
    script = (
        "from gallery.indexing import encoder; clip = encoder.get_encoder();"
        "print(clip.backend, clip.text_session.get_session_options().intra_op_num_threads,"
        "clip.image_session.get_session_options().intra_op_num_threads)"
    )
    assert _in_a_new_process(script, CLIP_BACKEND="onnx", ENCODER_THREADS="1") == [
        "onnx",
        "1",
        "1",
    ]
    assert _in_a_new_process(script, CLIP_BACKEND="onnx", ENCODER_THREADS="3")[1:] == ["3", "3"]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_text_only_encoder_holds_no_image_tower_and_grows_one_when_asked(settings, backend):
    settings.CLIP_BACKEND = backend
    spec = encoder.ModelSpec(name="vs-test-tiny", pretrained="random", random_seed=5)
    text_only = encoder.get_encoder(spec, image_tower=False)
    assert text_only.backend == backend and not text_only.has_image_tower
    if backend == "torch":
        assert text_only.model.visual is None
    else:
        assert text_only.image_session is None
    with pytest.raises(RuntimeError, match="text only"):
        text_only.encode_images([pil_image()])
    assert encoder.get_encoder(spec, image_tower=False) is text_only  # kept for text
    full = encoder.get_encoder(spec)  # an image query: the full model replaces it
    assert full.has_image_tower and full.encode_images([pil_image()]).shape == (1, 512)
    np.testing.assert_allclose(full.encode_texts(["a"]), text_only.encode_texts(["a"]), atol=1e-5)
    assert encoder.get_encoder(spec, image_tower=False) is full
    encoder.release_encoders(keep=[])
