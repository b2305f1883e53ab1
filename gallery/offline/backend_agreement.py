"""`evaluate --compare-backends`: how much an ONNX Runtime encoder (fp32, int8) changes what
people find against torch fp32, by exact ranking over the dataset read from disk."""

import tempfile

import numpy as np
from django.conf import settings
from tqdm import tqdm

from gallery.offline import evaluation, metrics
from gallery.offline.encoder_comparison import COMPARED_ENCODERS, load_compared_encoder

OVERLAP_DEPTH = 10  # the top results whose overlap with the reference encoder's counts


def compare_backends(config: evaluation.EvaluationConfig) -> dict:
    """How much an encoder changes what people find: for torch fp32 and each ONNX precision,
    mAP per query set (exact cosine ranking over the whole dataset) and the mean overlap of
    each query's top 10 with torch fp32's. Needs no database: the dataset is read from disk.
    """
    from gallery.indexing.encoder_base import ModelSpec
    from gallery.pixels import open_upright

    model = evaluation.model_settings(config)
    spec = ModelSpec(
        name=model["CLIP_MODEL"],
        pretrained=model["CLIP_PRETRAINED"],
        weights_file=model["CLIP_WEIGHTS_FILE"],
        random_seed=settings.CLIP_RANDOM_SEED,
    )
    with tempfile.TemporaryDirectory(prefix="visual-search-eval-") as workdir:
        dataset = evaluation.load_configured_dataset(config, workdir)
        paths = [item.path for item in dataset.items]
        labels = {index: item.label for index, item in enumerate(dataset.items)}
        captions = {index: item.caption for index, item in enumerate(dataset.items)}
        queries = evaluation.build_queries(dataset, labels, captions, config)
        rankings = {}
        for backend, precision in COMPARED_ENCODERS:
            label = f"{backend} {precision}"
            clip = load_compared_encoder(spec, backend, precision, settings.ENCODE_BATCH_SIZE)
            vectors = []
            for start in tqdm(range(0, len(paths), clip.batch_size), desc=f"Encoding ({label})"):
                batch = paths[start : start + clip.batch_size]
                pictures = [open_upright(path, clip.image_size) for path in batch]
                vectors.append(clip.encode_images(pictures))
            rankings[label] = _exact_rankings(clip, queries, np.concatenate(vectors))
            del clip
    return {
        "model": spec.model_id,
        "weights": spec.weights_file or spec.pretrained,
        "dataset": {"name": dataset.name, "images": len(paths), "classes": len(dataset.classes)},
        "query_sets": _backend_agreement(queries, rankings),
    }


def _exact_rankings(clip, queries: list[evaluation.Query], vectors: np.ndarray) -> list[list[int]]:
    texts = sorted({query.text for query in queries if query.text})
    text_vectors = dict(zip(texts, clip.encode_texts(texts), strict=True)) if texts else {}
    rankings = []
    for query in queries:
        probe = text_vectors[query.text] if query.text else vectors[query.image_id]
        order = np.argsort(-(vectors @ probe), kind="stable")
        rankings.append([int(index) for index in order if index != query.image_id])
    return rankings


def _backend_agreement(queries: list[evaluation.Query], rankings: dict[str, list]) -> dict:
    reference_label = "{} {}".format(*COMPARED_ENCODERS[0])
    reference = rankings[reference_label]
    figures: dict[str, dict] = {}
    for query_set in dict.fromkeys(query.query_set for query in queries):
        members = [i for i, query in enumerate(queries) if query.query_set == query_set]
        reference_map = np.mean(
            [metrics.average_precision(reference[i], queries[i].relevant) for i in members]
        )
        figures[query_set] = {}
        for label, ranked in rankings.items():
            mean_ap = np.mean(
                [metrics.average_precision(ranked[i], queries[i].relevant) for i in members]
            )
            overlap = np.mean(
                [
                    len(set(ranked[i][:OVERLAP_DEPTH]) & set(reference[i][:OVERLAP_DEPTH]))
                    / OVERLAP_DEPTH
                    for i in members
                ]
            )
            figures[query_set][label] = {
                "queries": len(members),
                "mAP": round(float(mean_ap), 4),
                "mAP_change": round(float(mean_ap - reference_map), 4),
                "top10_overlap": round(float(overlap), 4),
            }
    return figures
