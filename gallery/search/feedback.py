"""Relevance feedback ("more like these / less like these"): Rocchio's query update with the
stored vectors of the images a person marked relevant (`more`) or not relevant (`less`).

    q' = α·q + β·mean(relevant) − γ·mean(not relevant), then L2-normalised

q is the normalised query of the text and query image; without either, q = mean(relevant).
The weights are FEEDBACK_ALPHA, FEEDBACK_BETA and FEEDBACK_GAMMA (1, 0.75, 0.25: the usual
Rocchio values, which trust what was asked more than what was marked, and a "yes" more than a
"no"). The search page, both search APIs and `evaluate --feedback-rounds` all come here.
"""

import numpy as np
from django.conf import settings

from gallery.models import Embedding, Image
from gallery.search.request import MAX_MARKED_IMAGES, SearchError


def rocchio(
    query: np.ndarray | None,
    relevant: np.ndarray,
    irrelevant: np.ndarray,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
) -> np.ndarray:
    """The moved, normalised query. `relevant` and `irrelevant` are (n, d) arrays (n may be
    0); `query` is the normalised query vector, or None when only marks were given."""
    alpha = settings.FEEDBACK_ALPHA if alpha is None else alpha
    beta = settings.FEEDBACK_BETA if beta is None else beta
    gamma = settings.FEEDBACK_GAMMA if gamma is None else gamma
    if query is None:
        if not len(relevant):
            raise SearchError("more", "Mark at least one image as relevant, or type a query.")
        query = relevant.mean(axis=0)
    moved = alpha * np.asarray(query, dtype=np.float64)
    if len(relevant):
        moved = moved + beta * relevant.mean(axis=0)
    if len(irrelevant):
        moved = moved - gamma * irrelevant.mean(axis=0)
    norm = float(np.linalg.norm(moved))
    if norm < 1e-6:
        raise SearchError("less", "The images marked not relevant cancel the query out.")
    return (moved / norm).astype(np.float32)


def marked_vectors(parameter: str, image_ids: list[int], model) -> np.ndarray:
    """The model's stored vectors of the marked images, in the order given: (n, d).

    An image that does not exist or has no vector of the model yet is an error naming the
    parameter (as `like` is), not silently left out: the person would see a search that does
    not do what they marked.
    """
    if not image_ids:
        return np.zeros((0, int(model.dimensions)), dtype=np.float32)
    if len(image_ids) > MAX_MARKED_IMAGES:
        raise SearchError(parameter, f"Mark at most {MAX_MARKED_IMAGES} images in {parameter}.")
    stored = dict(
        Embedding.objects.filter(image_id__in=image_ids, model=model).values_list(
            "image_id", "vector"
        )
    )
    missing = [pk for pk in image_ids if pk not in stored]
    if missing:
        existing = set(Image.objects.filter(pk__in=missing).values_list("pk", flat=True))
        unknown = [pk for pk in missing if pk not in existing]
        if unknown:
            raise SearchError(parameter, f"There is no image {unknown[0]} (in {parameter}).")
        raise SearchError(
            parameter,
            f"Image {missing[0]} (in {parameter}) is not indexed yet; unmark it or try again "
            "in a moment.",
        )
    return np.array([np.asarray(stored[pk], dtype=np.float32) for pk in image_ids])


def feedback_query(query: np.ndarray | None, more: list[int], less: list[int], model):
    """Rocchio's moved query for a request's marks (see the module's docstring)."""
    both = sorted(set(more) & set(less))
    if both:
        raise SearchError(
            "less", f"Image {both[0]} is marked both relevant (more) and not relevant (less)."
        )
    relevant = marked_vectors("more", more, model)
    irrelevant = marked_vectors("less", less, model)
    return rocchio(query, relevant, irrelevant)
