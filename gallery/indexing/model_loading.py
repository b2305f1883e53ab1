"""Loading a registered model's encoder: how to load its row (whatever this process's own
configuration says), the checks that its weights are the registered ones, and the load error
recorded on the row for the admin and /healthz.
"""

import logging

from django.utils import timezone

from gallery.indexing import encoder
from gallery.indexing.encoder_base import (
    ImageEncoding,
    ModelSpec,
    ModelWeightsUnavailable,
    weights_sha256,
)
from gallery.models import EmbeddingModel

logger = logging.getLogger(__name__)


def spec_of(model: EmbeddingModel) -> ModelSpec:
    """How to load a registered model, whatever this process's own configuration says."""
    return ModelSpec(
        name=model.architecture,
        pretrained=model.pretrained,
        weights_file=model.weights_file,
        random_seed=model.random_seed,
    )


def load_encoder(model: EmbeddingModel, *, image_tower: bool = True) -> ImageEncoding:
    """The loaded encoder of a registered model; a failure is recorded on the model's row."""
    try:
        spec = spec_of(model)
        if model.weights_sha256 and weights_sha256(spec.weights_file) != model.weights_sha256:
            raise ModelWeightsUnavailable(
                f"{spec.weights_file} has changed since {model.model_id} was registered; its "
                "vectors would not match. Restore the file, or configure it as a new model."
            )
        clip = encoder.get_encoder(spec, image_tower=image_tower)
        if clip.dimensions != model.dimensions:
            raise ModelWeightsUnavailable(
                f"{model.model_id} was registered with {model.dimensions}-d vectors but the "
                f"loaded weights make {clip.dimensions}-d vectors."
            )
    except ModelWeightsUnavailable as error:
        record_load_error(model, str(error))
        raise
    if model.load_error:
        record_load_error(model, "")
    return clip


def record_load_error(model: EmbeddingModel, message: str) -> None:
    """Keep why the model cannot be loaded on its row ("" clears it once it loads)."""
    model.load_error = message[:4000]
    model.load_error_at = timezone.now() if message else None
    EmbeddingModel.objects.filter(pk=model.pk).update(
        load_error=model.load_error, load_error_at=model.load_error_at
    )
    if message:
        logger.error("Cannot load CLIP model %s: %s", model.model_id, message)
