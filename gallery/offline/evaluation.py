"""`evaluate`: retrieval quality on a labelled dataset, in an isolated library.

The dataset is imported and encoded through the product's own ingest and indexing services
into a temporary database, every query runs through `search_images` (the search page's SQL),
and CLIP search (mode=semantic) is compared with the page's keyword and hybrid modes (its
full-text search, and their reciprocal rank fusion), and with itself through the HNSW index
and exactly.
"""

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.test.utils import override_settings
from tqdm import tqdm

from gallery.indexing import encoding, model_loading, registry
from gallery.library.ingest import ingest_image
from gallery.models import Embedding, Image
from gallery.offline import datasets, metrics, sandbox
from gallery.search import selector
from gallery.search.request import SearchRequest

PROMPT_TEMPLATE = "a photo of a {}."
# A subset of CLIP's ImageNet prompt ensemble (Radford et al. 2021).
PROMPT_ENSEMBLE = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
    "a cartoon {}.",
    "a rendering of a {}.",
    "itap of a {}.",
    "a photo of my {}.",
]
METHODS = ("clip-hnsw", "clip-exact", "keyword", "hybrid")


@dataclass
class EvaluationConfig:
    dataset: str
    format: str = "auto"
    model: str = ""
    pretrained: str = ""
    weights_file: str = ""
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    depth: int = 1000
    max_queries: int = 300
    limit_per_class: int | None = None
    seed: int = 0
    feedback_rounds: int = 0


@dataclass
class Query:
    query_set: str
    text: str = ""
    image_id: int | None = None
    relevant: set[int] = field(default_factory=set)


def run_evaluation(config: EvaluationConfig, *, report_dir: Path | None = None) -> dict:
    """Import, encode, query and score; returns every figure the command prints and reports.

    The HTML report is written before the isolated library (and its thumbnails) is dropped.
    """
    model = model_settings(config)
    with tempfile.TemporaryDirectory(prefix="visual-search-eval-") as workdir:
        # Read the dataset first: a bad path fails before any database is created.
        dataset = load_configured_dataset(config, workdir)
        # The site's paging depth (SEARCH_MAX_RESULTS) does not bound an offline ranking.
        depth = max(settings.SEARCH_MAX_RESULTS, config.depth + 200)
        with (
            # Hybrid fuses rankings this deep on every page, so the pages make one ranking.
            override_settings(
                **model, SEARCH_MAX_RESULTS=depth, SEARCH_HYBRID_DEPTH=config.depth + 200
            ),
            sandbox.isolated_library("eval") as library,
        ):
            labels, captions, duplicates = import_dataset(dataset)
            encode_all(list(labels))
            queries = build_queries(dataset, labels, captions, config)
            rankings, clip_scores = run_queries(queries, config.depth)
            figures = {
                "model": registry.active_model().model_id,
                "weights": model["CLIP_WEIGHTS_FILE"] or model["CLIP_PRETRAINED"],
                "dataset": {
                    "name": dataset.name,
                    "source": config.dataset,
                    "images": len(labels),
                    "duplicates_skipped": duplicates,
                    "classes": len(dataset.classes),
                },
                "ks": config.ks,
                "depth": config.depth,
                "query_sets": score_queries(queries, rankings, config.ks),
                "zero_shot": zero_shot(labels, dataset.classes),
                "per_query_average_precision": per_query_scores(queries, rankings),
                "suggested_confidence_thresholds": suggest_confidence_thresholds(
                    queries, rankings, clip_scores
                ),
            }
            if config.feedback_rounds:
                figures["feedback"] = simulate_feedback(
                    queries, config.feedback_rounds, config.depth
                )
            if report_dir is not None:
                from gallery.offline import evaluation_report

                examples = example_rankings(queries, rankings, labels, library.media_root)
                figures["report"] = str(
                    evaluation_report.write_report(figures, examples, report_dir)
                )
            return figures


def model_settings(config: EvaluationConfig) -> dict:
    """The model to evaluate: the one the options name, else the configured one."""
    named = config.model or config.pretrained
    return {
        "CLIP_MODEL": config.model or settings.CLIP_MODEL,
        "CLIP_PRETRAINED": config.pretrained or settings.CLIP_PRETRAINED,
        "CLIP_WEIGHTS_FILE": config.weights_file or ("" if named else settings.CLIP_WEIGHTS_FILE),
    }


def load_configured_dataset(config: EvaluationConfig, workdir: str):
    return datasets.load_dataset(
        config.dataset,
        format=config.format,
        limit_per_class=config.limit_per_class,
        workdir=Path(workdir),
    )


def import_dataset(dataset):
    """Ingest every item; returns {image id: label}, {image id: caption}, duplicates skipped."""
    labels, captions, duplicates = {}, {}, 0
    for item in tqdm(dataset.items, desc="Importing", unit="image"):
        result = ingest_image(
            data=item.path.read_bytes(),
            filename=item.path.name,
            caption=item.caption,
            enqueue=False,
        )
        if not result.ok:
            continue
        if not result.created:
            duplicates += 1  # identical content is stored once; the first label wins
            continue
        labels[result.image.pk] = item.label
        captions[result.image.pk] = item.caption
    return labels, captions, duplicates


def encode_all(image_ids: list[int]) -> None:
    batch = settings.ENCODE_BATCH_SIZE
    with tqdm(total=len(image_ids), desc="Encoding", unit="image") as bar:
        for start in range(0, len(image_ids), batch):
            chunk = image_ids[start : start + batch]
            summary = encoding.encode_images(chunk)
            if summary["failed"]:
                failed = Image.objects.filter(pk__in=chunk, status=Image.Status.FAILED).first()
                raise RuntimeError(f"Encoding failed: {failed.status_error}")
            bar.update(len(chunk))


def build_queries(dataset, labels: dict, captions: dict, config) -> list[Query]:
    by_label: dict[str, set[int]] = {}
    for image_id, label in labels.items():
        by_label.setdefault(label, set()).add(image_id)
    rng = random.Random(config.seed)
    queries = [
        Query("class prompt → image", text=PROMPT_TEMPLATE.format(name), relevant=by_label[name])
        for name in dataset.classes
        if name in by_label
    ]
    if dataset.has_captions:
        caption_ids = sorted(image_id for image_id in captions if captions[image_id])
        for image_id in rng.sample(caption_ids, min(config.max_queries, len(caption_ids))):
            queries.append(
                Query(
                    "caption → image", text=captions[image_id], relevant=by_label[labels[image_id]]
                )
            )
    image_ids = sorted(labels)
    for image_id in rng.sample(image_ids, min(config.max_queries, len(image_ids))):
        queries.append(
            Query(
                "image → image", image_id=image_id, relevant=by_label[labels[image_id]] - {image_id}
            )
        )
    return [query for query in queries if query.relevant]


def clip_ranking(
    query: Query,
    depth: int,
    *,
    exact: bool | None,
    more: list[int] = (),
    less: list[int] = (),
    mode: str = "semantic",
) -> tuple[list[int], list[float]]:
    """The product's own search, paged down to `depth` results: ids and their scores.
    `more` and `less` are relevance feedback's marks (gallery/search/feedback.py); `mode` is
    the search page's (semantic: CLIP alone; keyword; hybrid)."""
    hits, page = [], 1
    while len(hits) < depth:
        request = SearchRequest(
            text=query.text,
            like_image_id=query.image_id,
            more_ids=list(more),
            less_ids=list(less),
            mode=mode,
            page=page,
            page_size=100,
        )
        results = selector.search_images(request, exact=exact)
        hits += [hit for hit in results.hits if hit.image.pk != query.image_id]
        if not results.has_next:
            break
        page += 1
    hits = hits[:depth]
    return [hit.image.pk for hit in hits], [hit.score for hit in hits]


def run_queries(queries: list[Query], depth: int) -> tuple[list[dict], list[list[float]]]:
    """Each query's ranking per method, and the exact CLIP scores of its ranking."""
    rankings, clip_scores = [], []
    for query in tqdm(queries, desc="Querying", unit="query"):
        exact_ids, exact_scores = clip_ranking(query, depth, exact=True)
        ranked = {"clip-hnsw": clip_ranking(query, depth, exact=False)[0], "clip-exact": exact_ids}
        clip_scores.append(exact_scores)
        if query.text:
            # The search page's own modes, exact or through the index as the site decides.
            for mode in ("keyword", "hybrid"):
                ranked[mode] = clip_ranking(query, depth, exact=None, mode=mode)[0]
        rankings.append(ranked)
    return rankings, clip_scores


# How many results the simulated person of `simulate_feedback` looks at and marks each round.
FEEDBACK_JUDGED = 10


def simulate_feedback(queries: list[Query], rounds: int, depth: int) -> dict:
    """Relevance feedback as a person gives it, judged from the labels.

    Each round the simulated person marks every image among the first FEEDBACK_JUDGED results
    relevant (+) or not (−); marks accumulate, and the search runs again with them through
    `search_images` (exact scan: the index's own error left out). Per query set and round
    (0 is the search without feedback): P@10 and mAP of the ranking the person sees, and the
    residual mAP, with the images judged so far left out of the ranking and of the relevant
    set (what feedback finds beyond what was marked), next to the first ranking's residual
    mAP over the same images (what the person would have found by scrolling on instead).
    """
    per_round: dict[str, list[list[dict]]] = {}
    for query in tqdm(queries, desc="Feedback", unit="query"):
        rows = per_round.setdefault(query.query_set, [[] for _ in range(rounds + 1)])
        more: set[int] = set()
        less: set[int] = set()
        first: list[int] | None = None
        for round_number in range(rounds + 1):
            marks = {"more": sorted(more), "less": sorted(less)}
            ranking, _ = clip_ranking(query, depth, exact=True, **marks)
            first = ranking if first is None else first
            judged = more | less
            unjudged = query.relevant - judged
            rows[round_number].append(
                {
                    "P@10": metrics.precision_at_k(ranking, query.relevant, 10),
                    "mAP": metrics.average_precision(ranking, query.relevant),
                    "residual mAP": metrics.average_precision(
                        [pk for pk in ranking if pk not in judged], unjudged
                    ),
                    "first ranking residual mAP": metrics.average_precision(
                        [pk for pk in first if pk not in judged], unjudged
                    ),
                }
            )
            for pk in ranking[:FEEDBACK_JUDGED]:
                (more if pk in query.relevant else less).add(pk)
    return {
        "rounds": rounds,
        "judged_per_round": FEEDBACK_JUDGED,
        "weights": {
            "alpha": settings.FEEDBACK_ALPHA,
            "beta": settings.FEEDBACK_BETA,
            "gamma": settings.FEEDBACK_GAMMA,
        },
        "query_sets": {
            query_set: [
                {
                    "round": round_number,
                    "queries": len(scores),
                    **{
                        name: round(value, 4)
                        for name, value in metrics.mean_metrics(scores).items()
                    },
                }
                for round_number, scores in enumerate(rounds_scores)
            ]
            for query_set, rounds_scores in per_round.items()
        },
    }


def suggest_confidence_thresholds(queries, rankings, clip_scores) -> dict:
    """Per kind of query, the score that best separates relevant from irrelevant images.

    Every (query, ranked image) pair is a yes/no example; the threshold maximises F1. These
    are the values for SEARCH_TEXT_CONFIDENCE and SEARCH_IMAGE_CONFIDENCE (README).
    """
    pairs: dict[str, tuple[list, list]] = {"text": ([], []), "image": ([], [])}
    for query, ranked, scores in zip(queries, rankings, clip_scores, strict=True):
        kind = "image" if query.image_id else "text"
        pairs[kind][0].extend(scores)
        pairs[kind][1].extend(pk in query.relevant for pk in ranked["clip-exact"])
    suggestions = {}
    for kind, (scores, labels) in pairs.items():
        if any(labels):
            threshold, f1 = metrics.best_f1_threshold(scores, labels)
            suggestions[kind] = {"threshold": round(threshold, 4), "f1": round(f1, 4)}
    return suggestions


def score_queries(queries, rankings, ks) -> dict:
    """Mean metrics per query set and method, with mean precision-recall curves."""
    grouped: dict[str, dict[str, list]] = {}
    curves: dict[str, dict[str, list]] = {}
    for query, ranked in zip(queries, rankings, strict=True):
        for method, ranking in ranked.items():
            grouped.setdefault(query.query_set, {}).setdefault(method, []).append(
                metrics.query_metrics(ranking, query.relevant, ks)
            )
            curves.setdefault(query.query_set, {}).setdefault(method, []).append(
                _interpolated_precision(ranking, query.relevant)
            )
    return {
        query_set: {
            method: {
                "queries": len(scores),
                **{name: round(value, 4) for name, value in metrics.mean_metrics(scores).items()},
                "pr_curve": [
                    round(float(v), 4) for v in np.mean(curves[query_set][method], axis=0)
                ],
            }
            for method, scores in methods.items()
        }
        for query_set, methods in grouped.items()
    }


def _interpolated_precision(ranking, relevant) -> np.ndarray:
    precisions, recalls = metrics.precision_recall_curve(ranking, relevant)
    precisions, recalls = np.array(precisions or [0.0]), np.array(recalls or [0.0])
    return np.array(
        [
            precisions[recalls >= level].max() if (recalls >= level).any() else 0.0
            for level in metrics.RECALL_LEVELS
        ]
    )


def zero_shot(labels: dict, classes: list[str]) -> dict:
    """rclip's protocol: each image's class is the best-scoring class prompt."""
    ids = sorted(labels)
    model = registry.active_model()
    vectors = np.array(
        [
            np.asarray(v, dtype=np.float32)
            for v in Embedding.objects.filter(model=model, image__in=ids)
            .order_by("image_id")
            .values_list("vector", flat=True)
        ]
    )
    clip = model_loading.load_encoder(model)
    truth = np.array([classes.index(labels[i]) if labels[i] in classes else -1 for i in ids])
    single = clip.encode_texts([PROMPT_TEMPLATE.format(name) for name in classes])
    ensemble = np.stack(
        [
            _normalise(clip.encode_texts([t.format(name) for t in PROMPT_ENSEMBLE]).mean(axis=0))
            for name in classes
        ]
    )
    results = {"classes": len(classes), "images": len(ids)}
    for name, prompts in (("single prompt", single), ("prompt ensemble", ensemble)):
        order = np.argsort(-(vectors @ prompts.T), axis=1)
        results[name] = {
            "top1": round(float(np.mean(order[:, 0] == truth)), 4),
            "top5": round(
                float(np.mean([t in row[:5] for t, row in zip(truth, order, strict=True)])), 4
            ),
        }
    return results


def _normalise(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def per_query_scores(queries, rankings) -> dict:
    scores: dict[str, dict[str, list[float]]] = {}
    for query, ranked in zip(queries, rankings, strict=True):
        for method, ranking in ranked.items():
            scores.setdefault(query.query_set, {}).setdefault(method, []).append(
                round(metrics.average_precision(ranking, query.relevant), 4)
            )
    return scores


def example_rankings(queries, rankings, labels, media_root, per_set: int = 6) -> list[dict]:
    """A few queries per set with their top results, for people to judge by looking."""
    rng = random.Random(1)
    examples = []
    by_set: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        by_set.setdefault(query.query_set, []).append(index)
    thumbnails = dict(Image.objects.values_list("pk", "thumbnail"))
    for query_set, indexes in by_set.items():
        for index in rng.sample(indexes, min(per_set, len(indexes))):
            query = queries[index]
            examples.append(
                {
                    "query_set": query_set,
                    "text": query.text,
                    "image": str(Path(media_root) / thumbnails[query.image_id])
                    if query.image_id
                    else None,
                    "label": labels[query.image_id] if query.image_id else "",
                    "results": {
                        method: [
                            {
                                "image": str(Path(media_root) / thumbnails[pk]),
                                "label": labels[pk],
                                "relevant": pk in query.relevant,
                            }
                            for pk in ranking[:8]
                        ]
                        for method, ranking in rankings[index].items()
                        if method != "clip-exact"
                    },
                }
            )
    return examples
