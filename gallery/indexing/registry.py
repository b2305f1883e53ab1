"""The model registry: which CLIP models the library has vectors of, and switching between them.

The configured model (CLIP_MODEL and its weights) is what the library should move to; the
active model is what every search uses. When they differ, the configured model is registered
as the next model: workers fill its vectors while the active model keeps answering with full
results, and once every indexable image has a vector of the next model it becomes active in
one transaction. Web processes re-read the active model every MODEL_REFRESH_SECONDS, so a
switch reaches them without a restart. Changes to the registry are serialised by a
PostgreSQL advisory lock, so concurrent processes cannot register or activate twice.

Reads never write: the configured model is registered after `migrate` and `flush`
(gallery/apps.py; every `up` and Compose web start migrates) and by `reindex`, and
`prepare_models` registers it in a library with no active model; a search or a job never does.
"""

import logging
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from gallery.errors import InvalidInput
from gallery.indexing import encoder
from gallery.indexing.encoder_base import ModelSpec, ModelWeightsUnavailable, weights_sha256
from gallery.indexing.model_loading import record_load_error, spec_of
from gallery.indexing.queueing import enqueue_encoding, enqueue_now
from gallery.indexing.vector_index import (
    create_vector_index,
    drop_vector_indexes,
    forget_index_storages,
)
from gallery.models import EmbeddingModel, Image

logger = logging.getLogger(__name__)

# Any constant shared by every process; pg_advisory_xact_lock holds it until commit.
REGISTRY_LOCK = 0x5649_5355  # "VISU"
State = EmbeddingModel.State


class ModelSwitchError(InvalidInput):
    """A registry change that cannot be made now; the message says why."""


class NoActiveModel(ModelWeightsUnavailable):
    """No model is registered yet: searches and workers wait until `migrate` registers one."""

    def __init__(self):
        super().__init__(
            "No CLIP model is registered yet. `visual-search migrate` (run by `up`) registers "
            "the configured one (CLIP_MODEL) and says why when it cannot."
        )


# -- reading the registry --------------------------------------------------------------------

_cached = {"active": None, "at": float("-inf")}
_cache_lock = threading.Lock()


def active_model() -> EmbeddingModel:
    """The model every search uses, re-read from the database every MODEL_REFRESH_SECONDS.

    Only reads: an empty registry (a library `migrate` has not registered a model in) raises
    NoActiveModel, which searches answer as unavailable.
    """
    with _cache_lock:
        if time.monotonic() - _cached["at"] < settings.MODEL_REFRESH_SECONDS:
            return _cached["active"]
    model = EmbeddingModel.objects.filter(state=State.ACTIVE).first()
    if model is None:
        raise NoActiveModel()
    with _cache_lock:
        previous = _cached["active"]
        _cached.update(active=model, at=time.monotonic())
    if previous is not None and previous.pk != model.pk:
        # A switch: this process no longer needs the previous model's weights.
        upcoming = next_model()
        keep = [model] if upcoming is None else [model, upcoming]
        encoder.release_encoders(keep=[spec_of(kept) for kept in keep])
    return model


def forget_cached_models() -> None:
    with _cache_lock:
        _cached.update(active=None, at=float("-inf"))
    forget_index_storages()


def next_model() -> EmbeddingModel | None:
    return EmbeddingModel.objects.filter(state=State.NEXT).first()


def models_to_fill() -> list[EmbeddingModel]:
    """The models every image needs a vector of: the active one, then the next one if any.

    Read in one query, so a switch committing meanwhile cannot give a mixed answer.
    """
    models = sorted(
        EmbeddingModel.objects.filter(state__in=[State.ACTIVE, State.NEXT]),
        key=lambda model: model.state != State.ACTIVE,
    )
    if not models or models[0].state != State.ACTIVE:
        models.insert(0, active_model())  # an empty registry raises NoActiveModel
    return models


def coverage(model: EmbeddingModel) -> dict:
    """How many indexable images have a vector of this model."""
    indexable = Image.objects.indexable().count()
    missing = Image.objects.missing_vector_of(model).count()
    return {
        "indexable": indexable,
        "covered": indexable - missing,
        "missing": missing,
        "percent": 100.0 if not indexable else round(100 * (indexable - missing) / indexable, 1),
    }


# -- changing the registry -------------------------------------------------------------------


def _lock_registry() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [REGISTRY_LOCK])


def hold_registry_shared() -> None:
    """Until this transaction ends, no model can be registered, activated or retired."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [REGISTRY_LOCK])


def _register(spec: ModelSpec, model_id: str, state: str) -> EmbeddingModel:
    model = EmbeddingModel.objects.filter(model_id=model_id).first()
    if model is None:
        model = EmbeddingModel.objects.create(
            model_id=model_id,
            architecture=spec.name,
            pretrained=spec.pretrained if not spec.weights_file else "",
            weights_file=spec.weights_file,
            weights_sha256=weights_sha256(spec.weights_file) if spec.weights_file else "",
            random_seed=spec.random_seed,
            dimensions=encoder.architecture_dimensions(spec.name),
            state=state,
        )
    else:
        model.state = state
        model.retired_at = None
        model.save(update_fields=["state", "retired_at"])
        _follow_moved_weights(model, spec)
    if state == State.ACTIVE:
        model.activated_at = timezone.now()
        model.save(update_fields=["activated_at"])
    create_vector_index(model)
    return model


def _follow_moved_weights(model: EmbeddingModel, spec: ModelSpec) -> None:
    """The same weights (same SHA-256) now at another path: load them from there."""
    if spec.weights_file and model.weights_file != spec.weights_file:
        model.weights_file = spec.weights_file
        model.save(update_fields=["weights_file"])


def _is_legacy_file_model(model: EmbeddingModel, spec: ModelSpec) -> bool:
    """A model the old schema named by its weights file's name alone (no SHA-256 known)."""
    return bool(
        spec.weights_file
        and not model.weights_sha256
        and model.weights_file
        and model.architecture == spec.name
        and Path(model.weights_file).name == Path(spec.weights_file).name
    )


def _adopt_legacy_file_model(model: EmbeddingModel, spec, model_id: str) -> None:
    """The configured file is the one the old id named: give the model its path and hash.

    The old scheme identified weights by file name, so this trusts the name once, at
    upgrade, instead of re-encoding the library (or failing to load a bare file name).
    """
    model.model_id = model_id
    model.weights_file = spec.weights_file
    model.weights_sha256 = weights_sha256(spec.weights_file)
    model.save(update_fields=["model_id", "weights_file", "weights_sha256"])
    logger.info("Upgraded %s to %s (weights identified by their SHA-256).", model, model_id)


def _retire(model: EmbeddingModel) -> None:
    model.state = State.RETIRED
    model.retired_at = timezone.now()
    model.save(update_fields=["state", "retired_at"])


def sync_configured_model(*, fill: bool = True) -> EmbeddingModel:
    """Make the registry follow the configuration; returns the configured model's row.

    No active model: the configured one becomes active. Otherwise a configured model other
    than the active one becomes the next model (replacing any other next model) and, with
    `fill`, its vectors are queued; configuring the active model again cancels a switch.
    """
    spec = ModelSpec.from_settings()
    model_id = spec.model_id
    with transaction.atomic():
        _lock_registry()
        model, is_new_next = _follow_configuration(spec, model_id)
    forget_cached_models()
    if is_new_next and fill:
        fill_model(model)
    activate_next_if_complete()
    return model


def _follow_configuration(spec, model_id: str) -> tuple[EmbeddingModel, bool]:
    active = EmbeddingModel.objects.filter(state=State.ACTIVE).first()
    upcoming = next_model()
    if upcoming is not None and upcoming.model_id == model_id:
        _follow_moved_weights(upcoming, spec)
        return upcoming, False
    if upcoming is not None:
        _retire(upcoming)
        logger.info("Stopped filling %s: the configuration names another model.", upcoming)
    if active is not None and active.model_id == model_id:
        _follow_moved_weights(active, spec)
        return active, False
    if active is not None and _is_legacy_file_model(active, spec):
        _adopt_legacy_file_model(active, spec, model_id)
        return active, False
    if active is None:
        logger.info("Registered %s as the active model.", model_id)
        return _register(spec, model_id, State.ACTIVE), False
    logger.info("Registered %s as next; %s answers until it is filled.", model_id, active)
    return _register(spec, model_id, State.NEXT), True


def fill_model(model: EmbeddingModel) -> int:
    """Queue every indexable image that has no vector of this model yet."""
    return enqueue_now(
        Image.objects.missing_vector_of(model).order_by("pk").values_list("pk", flat=True),
        background=True,
    )


def activate_model(
    model: EmbeddingModel, *, force: bool = False, only_if_next: bool = False
) -> EmbeddingModel:
    """Make this model the one searches use, in one transaction.

    Refused while indexable images lack its vector, unless forced: forced, those images are
    not searchable (pending) until a worker encodes them. With `only_if_next`, refused when
    the model stopped being the next one meanwhile (a cancelled switch stays cancelled).
    """
    with transaction.atomic():
        _lock_registry()
        if not EmbeddingModel.objects.filter(pk=model.pk).exists():
            raise ModelSwitchError(f"{model.model_id} was removed.")
        model.refresh_from_db()
        if model.state == State.ACTIVE:
            return model
        if only_if_next and model.state != State.NEXT:
            raise ModelSwitchError(f"{model.model_id} is no longer the next model.")
        missing = Image.objects.missing_vector_of(model).count()
        if missing and not force:
            raise ModelSwitchError(
                f"{missing} image(s) have no vector of {model.model_id} yet; wait for the "
                "workers to finish, or force the switch (those images stay unsearchable "
                "until they are encoded)."
            )
        for previous in EmbeddingModel.objects.filter(state=State.ACTIVE):
            _retire(previous)
        model.state = State.ACTIVE
        model.activated_at = timezone.now()
        model.retired_at = None
        model.save(update_fields=["state", "activated_at", "retired_at"])
        _statuses_follow(model)
    forget_cached_models()
    with connection.cursor() as cursor:
        # The planner's statistics may predate the new model's rows; stale, it estimated one
        # row for them and scanned all 100,000 instead of using the index (700 ms vs 4 ms).
        cursor.execute("ANALYZE gallery_embedding")
    logger.info("%s is now the active model.", model.model_id)
    return model


def _statuses_follow(active: EmbeddingModel) -> None:
    """Pending images with a vector of the new active model become searchable (indexed);
    indexed ones without one wait (pending), queued for encoding."""
    now = timezone.now()
    Image.objects.filter(status=Image.Status.PENDING).with_vector_of(active).update(
        status=Image.Status.INDEXED, indexed_at=now
    )
    unsearchable = Image.objects.filter(status=Image.Status.INDEXED).missing_vector_of(active)
    waiting = list(unsearchable.values_list("pk", flat=True))
    unsearchable.update(status=Image.Status.PENDING)
    if waiting:
        enqueue_encoding(waiting)


def activate_next_if_complete() -> EmbeddingModel | None:
    """Activate the next model once every indexable image has its vector (MODEL_AUTO_ACTIVATE)."""
    if not settings.MODEL_AUTO_ACTIVATE:
        return None
    upcoming = next_model()
    if upcoming is None or Image.objects.missing_vector_of(upcoming).exists():
        return None
    try:
        return activate_model(upcoming, only_if_next=True)
    except ModelSwitchError:
        return None  # an image arrived meanwhile (its job activates later), or cancelled


def retire_model(model: EmbeddingModel) -> None:
    """Stop filling a next model (its vectors stay until pruned); the active one cannot go."""
    with transaction.atomic():
        _lock_registry()
        model.refresh_from_db()
        if model.state == State.ACTIVE:
            raise ModelSwitchError(
                f"{model.model_id} answers every search; activate another model first."
            )
        if model.state != State.RETIRED:
            _retire(model)


def prune_retired_models() -> list[tuple[str, int]]:
    """Delete retired models with their vectors and indexes; returns (model id, vectors)."""
    pruned = []
    with transaction.atomic():
        _lock_registry()
        for model in EmbeddingModel.objects.filter(state=State.RETIRED):
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM gallery_embedding WHERE model_id = %s", [model.pk])
                pruned.append((model.model_id, cursor.rowcount))
            # Last: DROP INDEX locks the table against searches until the commit.
            drop_vector_indexes(model)
            model.delete()
    return pruned


def prepare_model_files() -> tuple[list[str], list[str]]:
    """Make what the configured backend needs on disk (ONNX exports) for every model in use,
    without loading a model into this process. Returns (errors, warnings): models that
    cannot be loaded, and models that will run in torch instead of ONNX Runtime.

    A library without an active model (migrate could not register one) gets the configured
    model first, as at migrate."""
    if not EmbeddingModel.objects.filter(state=State.ACTIVE).exists():
        sync_configured_model()
    errors, warnings = [], []
    for model in models_to_fill():
        try:
            warning = encoder.prepare_model_files(spec_of(model))
        except ModelWeightsUnavailable as error:
            record_load_error(model, str(error))
            errors.append(f"{model.model_id}: {error}")
        else:
            if warning:
                warnings.append(f"{model.model_id}: {warning}")
    return errors, warnings
