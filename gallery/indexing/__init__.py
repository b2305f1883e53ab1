"""Indexing: the CLIP model, the queue, the RQ jobs and workers that turn images into vectors."""
