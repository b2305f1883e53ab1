"""An upload handler that stops receiving a file once it passes MAX_UPLOAD_BYTES.

Without it Django would spool a multi-gigabyte upload to disk before anything could refuse it.
The file is skipped and its name recorded, so the view can still report it by name.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile


class SizeLimitUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0
        if not hasattr(self.request, "oversized_uploads"):
            self.request.oversized_uploads = []

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.request.oversized_uploads.append(self.file_name)
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handlers build the file object
