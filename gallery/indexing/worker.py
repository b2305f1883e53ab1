"""The RQ worker classes the site runs (encoding, and OCR on its own queue): jobs execute in
the worker process itself.

RQ's default worker forks a child per job, which re-imports torch and reloads the model every
time (measured: 5 s per job against 17 ms in-process). This worker loads the model once.
"""

import logging
import os

from django.db import close_old_connections
from rq.worker import SimpleWorker

from gallery.processes import end_with_parent

logger = logging.getLogger(__name__)
_forks_end_with_worker = False


class SiteWorker(SimpleWorker):
    def work(self, *args, burst: bool = False, **kwargs):
        global _forks_end_with_worker
        if not burst and not _forks_end_with_worker:
            # RQ's scheduler is a process the worker forks: it ends with the worker instead
            # of living on, holding the queue's scheduler lock, when the worker is SIGKILLed.
            os.register_at_fork(after_in_child=end_with_parent)
            _forks_end_with_worker = True
        return super().work(*args, burst=burst, **kwargs)

    def execute_job(self, job, queue):
        # What Django does around each request: a connection that died with the database
        # (a restart, a failover) is replaced instead of failing every later job.
        close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            close_old_connections()


class EncodingWorker(SiteWorker):
    def work(self, *args, **kwargs):
        from gallery.indexing import encoder, model_loading, registry

        # Load the registered models (active, and next during a switch) before the first job.
        try:
            for model in registry.models_to_fill():
                model_loading.load_encoder(model)
        except encoder.ModelWeightsUnavailable:
            pass  # recorded on the model and logged; jobs retry loading and keep images pending
        return super().work(*args, **kwargs)


class OcrWorker(SiteWorker):
    """Reads text in images (OCR_QUEUE): loads the OCR model, never the CLIP model, once."""

    def work(self, *args, **kwargs):
        from gallery.indexing import ocr

        try:
            ocr.text_reader()
        except Exception:
            # Jobs load it again and raise, so RQ retries them and the images stay unread.
            logger.exception("The OCR model could not be loaded")
        return super().work(*args, **kwargs)
