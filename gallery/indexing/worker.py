"""The RQ worker class the site runs: jobs execute in the worker process itself.

RQ's default worker forks a child per job, which re-imports torch and reloads the model every
time (measured: 5 s per job against 17 ms in-process). This worker loads the model once.
"""

import logging

from rq.worker import SimpleWorker

logger = logging.getLogger(__name__)


class EncodingWorker(SimpleWorker):
    def work(self, *args, **kwargs):
        from gallery.indexing.encoder import ModelWeightsUnavailable, get_encoder

        try:
            get_encoder()
        except ModelWeightsUnavailable as error:
            # Keep running: each job will then fail with this same message on its images.
            logger.error("%s", error)
        return super().work(*args, **kwargs)
