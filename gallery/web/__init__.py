"""The web front: views, forms, the JSON API, the upload handler and the health check."""
