"""The library: getting images in (validation, storage, tags) and listing them."""
