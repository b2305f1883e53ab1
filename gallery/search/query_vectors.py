"""Query vectors of the active model: text terms (cached), query images, "more like this",
and the marks of relevance feedback (moved by gallery/search/feedback.py).

Every cache key names the model, so vectors of a previous model are never reused after a
switch.
"""

import hashlib
import logging
import threading
from collections import OrderedDict

import numpy as np
from django.conf import settings
from django.core.cache import cache

from gallery import pixels
from gallery.cache import cache_call
from gallery.indexing import encoder, model_loading, registry
from gallery.library.validation import RejectedImage, check_upload_size, validate_image
from gallery.models import Embedding, Image
from gallery.search import feedback
from gallery.search.query_syntax import Term, parse_query
from gallery.search.request import SearchError, SearchRequest

logger = logging.getLogger(__name__)


_text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
_text_vectors_lock = threading.Lock()


def text_vector(text: str, model=None) -> np.ndarray:
    """The active model's vector for `text`, cached in process (LRU) and in Redis."""
    model = model or registry.active_model()
    # The encoder is part of the key: switching CLIP_PRECISION or the backend does not serve
    # the other encoder's vectors from Redis.
    encoding = f"{encoder.configured_backend()}|{settings.CLIP_PRECISION}"
    digest = hashlib.sha256(f"{model.model_id}|{encoding}|{text}".encode()).hexdigest()
    key = f"textvec:{digest}"
    with _text_vectors_lock:
        if key in _text_vectors:
            _text_vectors.move_to_end(key)
            return _text_vectors[key]
    vector = _cached_in_redis(key)
    if vector is None:
        vector = model_loading.load_encoder(model, image_tower=False).encode_texts([text])[0]
        _store_in_redis(key, vector)
    with _text_vectors_lock:
        _text_vectors[key] = vector
        while len(_text_vectors) > settings.TEXT_VECTOR_CACHE_SIZE:
            _text_vectors.popitem(last=False)
    return vector


def _cached_in_redis(key: str) -> np.ndarray | None:
    raw = cache_call(cache.get, key)
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


def _store_in_redis(key: str, vector: np.ndarray) -> None:
    cache_call(cache.set, key, vector.astype(np.float32).tobytes())


def preload_text_encoder() -> None:
    """Load the active model's text tower now (web process start), so no search waits."""
    try:
        model_loading.load_encoder(registry.active_model(), image_tower=False)
    except Exception as error:  # the database or the weights may be missing: say, don't fail
        logger.warning("Could not preload the text encoder: %s", error)


def clear_text_vector_cache() -> None:
    with _text_vectors_lock:
        _text_vectors.clear()


def remember_query_image(vector: np.ndarray) -> str:
    """Keep an uploaded query image's vector for paging; returns its token, or "" when Redis
    cannot keep it (the caller then answers at once, without paging)."""
    data = np.asarray(vector, dtype=np.float32).tobytes()
    token = hashlib.sha256(data).hexdigest()[:32]
    try:
        cache.set(_query_image_key(token), data, timeout=24 * 3600)
    except Exception as error:  # not through the text cache's breaker: this one matters
        logger.warning("Could not keep a query image in Redis: %s", error)
        return ""
    return token


def _query_image_key(token: str) -> str:
    return f"queryimage:{registry.active_model().model_id}:{token}"


def recall_query_image(token: str) -> np.ndarray:
    """A remembered query image's vector; after a model switch it has to be uploaded again."""
    if not token.isalnum():
        raise SearchError("image", "The query image has expired; upload it again.")
    try:
        raw = cache.get(_query_image_key(token))
    except Exception:
        raise SearchError(
            "image", "The query image cannot be recalled right now; upload it again."
        ) from None
    if raw is None:
        raise SearchError("image", "The query image has expired; upload it again.")
    return np.frombuffer(raw, dtype=np.float32)


def query_vector(
    request: SearchRequest, model=None, *, terms: list[Term] | None = None
) -> tuple[np.ndarray, bool]:
    """The combined, normalised query vector and whether an image took part.

    Every part comes from `model` (default: the active one), read once by the caller so a
    switch in the middle of a request cannot mix two models. `terms`: the request's text as
    the selector parsed it (parsed here when not given).
    """
    model = model or registry.active_model()
    if terms is None:
        terms = parse_query(request.text)
    parts = [term.weight * text_vector(term.text, model) for term in terms]
    has_image = False
    if request.image_vector is not None:
        parts.append(np.asarray(request.image_vector, dtype=np.float32))
        has_image = True
    if request.like_image_id is not None:
        parts.append(_stored_vector(request.like_image_id, model))
        has_image = True
    # Images marked relevant are a query of their own ("more like these").
    marked_relevant = bool(request.more_ids)
    if not has_image and not marked_relevant and not any(term.weight > 0 for term in terms):
        if terms:
            raise SearchError("q", "Add a word to search for, not only '-' terms to avoid.")
        raise SearchError("q", "Type something to search for, or give a query image.")
    query = None
    if parts:
        combined = np.sum(parts, axis=0)
        norm = float(np.linalg.norm(combined))
        if norm < 1e-6:
            raise SearchError("q", "The query's terms cancel each other out.")
        query = (combined / norm).astype(np.float32)
    if request.more_ids or request.less_ids:
        query = feedback.feedback_query(query, request.more_ids, request.less_ids, model)
    # A query pulled towards image vectors scores on the image-to-image scale.
    return query, has_image or marked_relevant


def _stored_vector(image_id: int, model) -> np.ndarray:
    """The model's vector of a library image ("more like this")."""
    embedding = Embedding.objects.filter(image_id=image_id, model=model).first()
    if embedding is None:
        if not Image.objects.filter(pk=image_id).exists():
            raise SearchError("like", f"There is no image {image_id}.")
        raise SearchError("like", "That image is not indexed yet; try again in a moment.")
    return np.asarray(embedding.vector, dtype=np.float32)


def query_image_vector(data: bytes, filename: str = "query image") -> np.ndarray:
    """The vector of an uploaded query image, after the same checks as an upload."""
    import io

    try:
        check_upload_size(len(data))
        # Fewer pixels than uploads may have, refused before decoding: a query image is
        # decoded on the web process, for every search that posts one.
        validate_image(data, filename, notes=[], max_pixels=settings.QUERY_IMAGE_MAX_PIXELS)
    except RejectedImage as error:
        raise SearchError("image", str(error)) from None
    clip = model_loading.load_encoder(registry.active_model())
    picture = pixels.open_upright(io.BytesIO(data), clip.image_size)
    return clip.encode_images([picture])[0]
