"""Model lifecycle on real PostgreSQL, Valkey and RQ workers: register, fill, switch, prune.

Two tiny open_clip configurations with seeded random weights stand in for a small and a
large model: vs-test-tiny (512-d) and vs-test-tiny-768 (768-d).
"""

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from gallery.indexing import encoding, model_loading, queueing, registry
from gallery.indexing.worker import EncodingWorker
from gallery.library.ingest import ingest_image
from gallery.models import Embedding, EmbeddingModel, Image
from gallery.search.request import SearchRequest
from gallery.search.selector import search_images
from tests.images import distinct_images

pytestmark = pytest.mark.django_db(transaction=True)

SMALL, LARGE = "vs-test-tiny", "vs-test-tiny-768"
TEXTS = ["a red square", "blue sky over water", "photo"]


def add_images(count: int, offset: int = 0, **options) -> list[Image]:
    return [
        ingest_image(data=data, filename=f"{offset + n}.png", **options).image
        for n, data in enumerate(distinct_images(offset + count)[offset:])
    ]


def run_one_job(queue) -> bool:
    """One queued job on the site's worker class; False when the queue was empty."""
    if not queue.count:
        return False
    EncodingWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    return True


def run_all_jobs(queue) -> None:
    while run_one_job(queue):
        pass


def switch_to(architecture: str, settings, queue) -> EmbeddingModel:
    """Configure another model and let the workers fill it until it is active."""
    settings.CLIP_MODEL = architecture
    model = registry.sync_configured_model()
    run_all_jobs(queue)
    model.refresh_from_db()
    assert model.state == "active"
    registry.forget_cached_models()
    return model


def snapshot(client, images) -> dict:
    """Everything a user sees from search: text rankings, "more like this", a filtered miss."""
    seen = {}
    for text in TEXTS:
        # Semantic: cosine scores do not move when another image joins the library, as the
        # rank-fused scores of hybrid mode do (the late upload below).
        results = search_images(SearchRequest(text=text, page_size=100, mode="semantic"))
        seen[text] = [(hit.image.pk, round(hit.score, 5)) for hit in results.hits]
    like = client.get(reverse("api_search"), {"like": images[3].pk, "page_size": 100})
    assert like.status_code == 200
    seen["like"] = [hit["id"] for hit in like.json()["results"]]
    miss = client.get(reverse("api_search"), {"q": "photo", "min_score": 0.9999}).json()
    assert miss["results"] == []
    seen["miss"] = miss["message"].split(" (")[0]
    return seen


def without(seen: dict, image_pk: int) -> dict:
    """A snapshot with one image left out of every result list."""
    return {
        key: [hit for hit in hits if (hit[0] if isinstance(hit, tuple) else hit) != image_pk]
        if isinstance(hits, list)
        else hits
        for key, hits in seen.items()
    }


def vectors_of(model: EmbeddingModel, ids) -> np.ndarray:
    stored = dict(
        Embedding.objects.filter(model=model, image__in=ids).values_list("image_id", "vector")
    )
    return np.array([np.asarray(stored[pk], dtype=np.float32) for pk in ids])


def test_switching_to_a_larger_model_never_interrupts_search(
    client, django_user_model, media_root, queue, settings
):
    client.force_login(django_user_model.objects.create_user("watcher"))  # a private library
    settings.CLIP_MODEL = SMALL
    images = add_images(40)
    run_all_jobs(queue)
    small = registry.active_model()
    assert small.dimensions == 512 and small.embeddings.count() == 40
    before = snapshot(client, images)
    assert all(len(before[text]) == 40 for text in TEXTS)
    assert "No image reaches the minimum score" in before["miss"]

    settings.CLIP_MODEL = LARGE
    large = registry.sync_configured_model()
    assert (large.state, large.dimensions) == ("next", 768)
    assert queue.count == 5  # 40 images in batches of 8
    late = add_images(1, offset=40)[0]  # uploaded during the switch: needs both vectors

    steps, covered = 0, []
    while registry.next_model() is not None:
        # The same full results at every step; the late upload joins them once indexed
        # (its job runs first: uploads go ahead of the fill).
        assert without(snapshot(client, images), late.pk) == before
        covered.append(registry.coverage(large)["covered"])
        assert run_one_job(queue), "the queue ran dry before the switch"
        steps += 1
    assert steps == 6  # the late upload's job and five fill jobs
    assert covered == [0, 1, 9, 17, 25, 33]

    registry.forget_cached_models()
    large.refresh_from_db()
    small.refresh_from_db()
    assert (large.state, small.state) == ("active", "retired")
    assert Embedding.objects.filter(image=late).count() == 2
    everything = [image.pk for image in images] + [late.pk]
    clip = model_loading.load_encoder(large)
    large_vectors = vectors_of(large, everything)
    for text in TEXTS:
        query = clip.encode_texts([text])[0]
        expected = [everything[i] for i in np.argsort(-(large_vectors @ query), kind="stable")]
        results = search_images(SearchRequest(text=text, page_size=100, mode="semantic"))
        found = [hit.image.pk for hit in results.hits]
        assert found == expected
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 41

    call_command("prune_models")
    assert not EmbeddingModel.objects.filter(pk=small.pk).exists()
    assert Embedding.objects.count() == 41 and not Embedding.objects.filter(model=small).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'gallery_embedding'")
        names = {row[0] for row in cursor.fetchall()}
    assert small.index_name not in names and large.index_name in names


def test_configuring_the_active_model_again_cancels_the_switch(media_root, queue, settings):
    images = add_images(3)
    run_all_jobs(queue)
    small = registry.active_model()
    settings.CLIP_MODEL = LARGE
    large = registry.sync_configured_model()
    settings.CLIP_MODEL = SMALL
    assert registry.sync_configured_model() == small
    large.refresh_from_db()
    assert large.state == "retired" and registry.next_model() is None
    run_all_jobs(queue)  # the fill jobs queued for the cancelled model do nothing harmful
    assert registry.active_model() == small
    assert all(image.embeddings.filter(model=small).exists() for image in images)


def test_without_auto_activation_the_admin_or_command_switches(
    admin_client, media_root, queue, settings
):
    settings.MODEL_AUTO_ACTIVATE = False
    add_images(3)
    run_all_jobs(queue)
    settings.CLIP_MODEL = LARGE
    large = registry.sync_configured_model()
    with pytest.raises(Exception, match="have no vector of vs-test-tiny-768"):
        call_command("activate_model")
    run_all_jobs(queue)
    assert registry.next_model() == large  # filled, but waiting for a person

    page = admin_client.get(reverse("admin:gallery_embeddingmodel_changelist")).content.decode()
    assert "vs-test-tiny-768:random-seed0" in page and "3 / 3 (100 %)" in page
    progress = admin_client.get(reverse("admin:gallery_image_changelist")).content.decode()
    assert "Switching to <strong>vs-test-tiny-768:random-seed0</strong>" in progress
    response = admin_client.post(
        reverse("admin:gallery_embeddingmodel_changelist"),
        {"action": "activate_selected", "_selected_action": [large.pk]},
        follow=True,
    )
    assert "now answers every search" in response.content.decode()
    registry.forget_cached_models()
    assert registry.active_model() == large


def test_forced_activation_leaves_uncovered_images_waiting_not_failed(media_root, queue, settings):
    images = add_images(4)
    run_all_jobs(queue)
    settings.CLIP_MODEL = LARGE
    registry.sync_configured_model()
    queue.empty()
    encoding.encode_images([images[0].pk])  # only one image has the large model's vector
    call_command("activate_model", "--force")
    registry.forget_cached_models()
    statuses = dict(Image.objects.values_list("pk", "status"))
    assert statuses[images[0].pk] == "indexed"
    assert [statuses[image.pk] for image in images[1:]] == ["pending"] * 3
    hits = search_images(SearchRequest(text="photo", page_size=10)).hits
    assert [hit.image.pk for hit in hits] == [images[0].pk]
    run_all_jobs(queue)  # the forced switch queued the waiting images
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 4


def test_weights_that_cannot_load_keep_images_pending_and_say_why(
    client, media_root, queue, settings
):
    settings.CLIP_MODEL = "ViT-B-32"  # real architecture, weights not available offline
    settings.CLIP_PRETRAINED = "laion2b_s34b_b79k"
    # A library started with these weights: they are its first model, whatever ran before.
    EmbeddingModel.objects.all().delete()
    registry.sync_configured_model()  # as `migrate` registers a new library's model
    images = add_images(3)
    with pytest.raises(Exception, match="CLIP_WEIGHTS_FILE"):
        encoding.encode_images([image.pk for image in images])
    queue.empty()
    assert set(Image.objects.values_list("status", "status_error")) == {("pending", "")}
    health = client.get(reverse("healthz")).json()
    assert "ViT-B-32:laion2b_s34b_b79k" in health["models"]["load_errors"]

    # The operator configures weights that load: the waiting images get indexed.
    settings.CLIP_MODEL, settings.CLIP_PRETRAINED = SMALL, "random"
    registry.sync_configured_model()
    queueing.requeue_lost_images()
    run_all_jobs(queue)
    assert set(Image.objects.values_list("status", flat=True)) == {"indexed"}


def test_a_next_model_that_cannot_load_leaves_indexed_images_indexed(media_root, queue, settings):
    images = add_images(3)
    run_all_jobs(queue)
    settings.CLIP_MODEL = "ViT-B-32"
    settings.CLIP_PRETRAINED = "laion2b_s34b_b79k"
    broken = registry.sync_configured_model()
    assert broken.state == "next"
    call_command("reindex", "--all")  # re-encodes the active model, cannot load the next
    run_all_jobs(queue)
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 3
    broken.refresh_from_db()
    assert "CLIP_WEIGHTS_FILE" in broken.load_error
    assert queueing.images_to_reindex("stale").count() == 3  # still waiting for it
    hits = search_images(SearchRequest(text="photo", page_size=10)).hits
    assert sorted(hit.image.pk for hit in hits) == sorted(image.pk for image in images)


def test_migration_moves_existing_vectors_into_embedding_rows_without_reencoding(settings):
    from gallery.offline.sandbox import isolated_database

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(6, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Four images of the configured model, one of an older model, one never indexed.
    made_by = ["vs-test-tiny:random-seed0"] * 4 + ["ViT-B-32:file:clip.bin", None]
    with isolated_database("migration"):
        call_command("migrate", "gallery", "0003", verbosity=0)
        with connection.cursor() as cursor:
            for n, (vector, model_id) in enumerate(zip(vectors, made_by, strict=True)):
                cursor.execute(
                    "INSERT INTO gallery_image (file, thumbnail, sha256, original_filename, "
                    "width, height, format, byte_size, caption, uploaded_at, taken_at, status, "
                    "status_error, embedding, embedding_model, indexed_at) VALUES "
                    "(%s, '', %s, '', 1, 1, 'PNG', 1, '', now(), now(), %s, '', %s::vector, "
                    "%s, now())",
                    [
                        f"originals/{n}.png",
                        f"{n:064x}",
                        "indexed" if model_id else "pending",
                        "[" + ",".join(map(str, vector.tolist())) + "]" if model_id else None,
                        model_id or "",
                    ],
                )
        call_command("migrate", verbosity=0)

        models = {model.model_id: model for model in EmbeddingModel.objects.all()}
        current = models["vs-test-tiny:random-seed0"]
        old = models["ViT-B-32:file:clip.bin"]
        assert (current.state, current.architecture, current.pretrained) == (
            "active",
            "vs-test-tiny",
            "random",
        )
        assert (old.state, old.architecture, old.weights_file) == (
            "retired",
            "ViT-B-32",
            "clip.bin",
        )
        ids = list(Image.objects.order_by("sha256").values_list("pk", flat=True))
        np.testing.assert_array_equal(vectors_of(current, ids[:4]), vectors[:4])
        np.testing.assert_array_equal(vectors_of(old, ids[4:5]), vectors[4:5])
        statuses = list(Image.objects.order_by("sha256").values_list("status", flat=True))
        # Only the active model's images stay searchable, exactly as before the migration.
        assert statuses == ["indexed"] * 4 + ["pending", "pending"]
        registry.forget_cached_models()
        results = search_images(SearchRequest(image_vector=vectors[2], page_size=10))
        assert [hit.image.pk for hit in results.hits][0] == ids[2]
        assert len(results.hits) == 4
    registry.forget_cached_models()


def test_a_running_web_process_follows_a_switch_without_restarting(media_root, queue, settings):
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from gallery.offline import sandbox
    from tests.conftest import clean_child_environment

    add_images(6)
    run_all_jobs(queue)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "searchsite.wsgi:application"]
        + ["--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env=clean_child_environment(
            DATABASE_URL=sandbox.database_url(),
            REDIS_URL=settings.REDIS_URL,
            SECRET_KEY="test",
            MEDIA_ROOT=str(media_root),
            MODEL_REFRESH_SECONDS="1",
            DJANGO_SETTINGS_MODULE="searchsite.settings",
            SITE_ACCESS="public",  # anonymous requests below
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ranking() -> list[int]:
        url = f"http://127.0.0.1:{port}/api/search?q=photo&page_size=10"
        with urllib.request.urlopen(url, timeout=60) as response:
            return [hit["id"] for hit in json.load(response)["results"]]

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                before = ranking()
                break
            except OSError:
                assert web.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.3)
        large = switch_to(LARGE, settings, queue)
        clip = model_loading.load_encoder(large)
        ids = list(Image.objects.order_by("pk").values_list("pk", flat=True))
        scores = vectors_of(large, ids) @ clip.encode_texts(["photo"])[0]
        expected = [ids[i] for i in np.argsort(-scores, kind="stable")]
        assert expected != before  # the two models rank differently
        switched_at = time.monotonic()
        while ranking() != expected:
            assert time.monotonic() - switched_at < 15, "the web process kept the old model"
            time.sleep(0.2)
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_a_weights_file_is_one_model_wherever_it_lies(media_root, queue, settings, tmp_path):
    import shutil

    import torch

    from gallery.indexing import encoder, torch_clip

    images = add_images(3)
    run_all_jobs(queue)
    seeded = registry.active_model()  # vs-test-tiny with seed-0 random weights
    first = tmp_path / "a" / "clip.bin"
    first.parent.mkdir()
    spec = encoder.ModelSpec(name=SMALL, pretrained="random", random_seed=0)
    torch.save(torch_clip.ClipEncoder(spec).model.state_dict(), first)

    settings.CLIP_PRETRAINED = ""
    settings.CLIP_WEIGHTS_FILE = str(first)
    from_file = registry.sync_configured_model()  # loads through open_clip's checkpoint path
    assert from_file.model_id.startswith(f"{SMALL}:sha256:") and from_file.state == "next"
    run_all_jobs(queue)
    from_file.refresh_from_db()
    assert from_file.state == "active"
    ids = [image.pk for image in images]
    # The same weights give the same vectors, whichever way they were loaded.
    np.testing.assert_allclose(vectors_of(from_file, ids), vectors_of(seeded, ids), atol=1e-5)

    moved = tmp_path / "renamed.pt"
    shutil.move(first, moved)
    settings.CLIP_WEIGHTS_FILE = str(moved)
    assert registry.sync_configured_model() == from_file  # same bytes: same model, new path
    from_file.refresh_from_db()
    assert from_file.weights_file == str(moved)
    call_command("reindex", "--all")
    run_all_jobs(queue)
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 3

    other = tmp_path / "b" / "clip.bin"  # same name, other weights
    other.parent.mkdir()
    other_spec = encoder.ModelSpec(name=SMALL, pretrained="random", random_seed=1)
    torch.save(torch_clip.ClipEncoder(other_spec).model.state_dict(), other)
    settings.CLIP_WEIGHTS_FILE = str(other)
    assert registry.sync_configured_model().model_id != from_file.model_id


def save_tiny_weights(path, seed: int = 0):
    import torch

    from gallery.indexing import encoder, torch_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    spec = encoder.ModelSpec(name=SMALL, pretrained="random", random_seed=seed)
    torch.save(torch_clip.ClipEncoder(spec).model.state_dict(), path)


def test_a_model_the_old_schema_named_by_file_name_adopts_the_configured_file(
    media_root, queue, settings, tmp_path
):
    images = add_images(2)
    run_all_jobs(queue)
    legacy = registry.active_model()  # as migration 0005 leaves a "name:file:clip.bin" model
    EmbeddingModel.objects.filter(pk=legacy.pk).update(
        model_id=f"{SMALL}:file:clip.bin", pretrained="", weights_file="clip.bin"
    )
    weights = tmp_path / "models" / "clip.bin"
    save_tiny_weights(weights)
    settings.CLIP_PRETRAINED = ""
    settings.CLIP_WEIGHTS_FILE = str(weights)
    adopted = registry.sync_configured_model()
    assert adopted.pk == legacy.pk and adopted.state == "active"
    assert adopted.model_id.startswith(f"{SMALL}:sha256:")
    assert adopted.weights_file == str(weights) and len(adopted.weights_sha256) == 64
    assert registry.next_model() is None and queue.count == 0  # nothing to re-encode
    registry.forget_cached_models()
    hits = search_images(SearchRequest(text="photo", page_size=10)).hits  # loads the file
    assert sorted(hit.image.pk for hit in hits) == sorted(image.pk for image in images)


def test_an_unreadable_file_during_a_switch_fails_its_image_and_the_switch_completes(
    media_root, queue, settings
):
    images = add_images(4)
    run_all_jobs(queue)
    with open(images[2].file.path, "r+b") as damaged:  # damaged on disk after indexing
        damaged.truncate(40)
    switch_to(LARGE, settings, queue)
    broken = Image.objects.get(pk=images[2].pk)
    assert broken.status == Image.Status.FAILED and not broken.embeddings.exists()
    registry.forget_cached_models()
    hits = search_images(SearchRequest(text="photo", page_size=10)).hits
    assert images[2].pk not in [hit.image.pk for hit in hits] and len(hits) == 3


def test_an_image_deleted_while_its_batch_encodes_does_not_lose_the_batch(
    media_root, queue, monkeypatch
):
    images = add_images(3, enqueue=False)
    real = encoding._encode_isolating_failures

    def delete_one_then_encode(clip, todo, *problems):
        Image.objects.filter(pk=images[1].pk).delete()  # a user deletes it mid-batch
        return real(clip, todo, *problems)

    monkeypatch.setattr(encoding, "_encode_isolating_failures", delete_one_then_encode)
    summary = encoding.encode_images([image.pk for image in images])
    assert summary["indexed"] == 2
    assert set(Image.objects.values_list("status", flat=True)) == {Image.Status.INDEXED}
    assert Embedding.objects.count() == 2


def test_a_cancelled_switch_is_not_activated_by_a_late_batch(media_root, queue, settings):
    add_images(2)
    run_all_jobs(queue)
    small = registry.active_model()
    large = switch_to(LARGE, settings, queue)
    settings.CLIP_MODEL = SMALL
    registry.sync_configured_model()  # small is now the next model, complete at once
    registry.forget_cached_models()
    assert registry.active_model() == small
    # A batch that read "large is next" before it was retired must not bring it back.
    with pytest.raises(registry.ModelSwitchError, match="no longer the next model"):
        registry.activate_model(large, only_if_next=True)
    assert registry.active_model() == small


def test_a_new_upload_is_not_queued_behind_a_model_switch(media_root, queue, settings):
    add_images(16)
    run_all_jobs(queue)
    settings.CLIP_MODEL = LARGE
    registry.sync_configured_model()
    assert queue.count == 2  # the fill, in the background
    upload = add_images(1, offset=16)[0]
    first = queue.jobs[0]
    assert first.args == ([upload.pk],)  # ahead of the fill
    run_one_job(queue)
    assert Image.objects.get(pk=upload.pk).status == Image.Status.INDEXED
    assert registry.next_model() is not None  # the switch goes on behind it


def test_reading_the_registry_never_registers_a_model(settings):
    from django.test.utils import CaptureQueriesContext

    settings.CLIP_MODEL = LARGE  # configured but not registered: only `migrate` registers it
    with CaptureQueriesContext(connection) as queries:
        active = registry.active_model()
        models = registry.models_to_fill()
    assert active.architecture == SMALL and models == [active]
    assert registry.next_model() is None
    assert all(query["sql"].lstrip().upper().startswith("SELECT") for query in queries)

    EmbeddingModel.objects.all().delete()  # a library `migrate` could not register a model in
    registry.forget_cached_models()
    with pytest.raises(registry.NoActiveModel):
        registry.active_model()
    with pytest.raises(registry.NoActiveModel):
        registry.models_to_fill()
    assert not EmbeddingModel.objects.exists()
