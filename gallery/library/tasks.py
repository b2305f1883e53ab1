"""RQ jobs of the library: take names, call a service. Retries are set where it is queued."""

from gallery.library import duplicates, lifecycle


def remove_files_job(files: dict[str, list[str]]) -> int:
    """Remove the files of deleted images; raises (so RQ retries) while any is left."""
    lifecycle.remove_image_files(files, strict=True)
    return sum(map(len, files.values()))


def scan_duplicates_job() -> int:
    """Scan the library for near-duplicates and keep the result for the staff page; returns
    how many groups it found."""
    return len(duplicates.scan_and_store_duplicates().groups)
