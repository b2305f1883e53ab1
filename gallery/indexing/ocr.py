"""The OCR model: RapidOCR (PaddleOCR's detector and recogniser as ONNX files shipped in its
wheel), loaded once per process with the process's thread budget. Nothing else imports
rapidocr_onnxruntime or OpenCV.

Reading runs in two stages: the detector finds text boxes on the whole image, and only when it
finds some does the recogniser read each box. A photo without text costs the detector alone
(README, "Text in images", has the measured times).
"""

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from PIL import Image as PILImage

from gallery.pixels import open_upright

logger = logging.getLogger(__name__)

# The detector enlarges an image whose shortest side is below this (its `limit_side_len`), so
# decoding an original larger than this gains nothing but time.
READING_SIDE = 736
# Recognised lines scoring below this are dropped (RapidOCR's own default).
MIN_LINE_SCORE = 0.5


@dataclass
class TextReading:
    """What OCR read in one image: its lines top to bottom, and where the time went."""

    lines: list[str] = field(default_factory=list)
    detect_seconds: float = 0.0
    recognise_seconds: float = 0.0
    boxes: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class TextReader:
    """RapidOCR with this process's thread budget. RapidOCR itself returns right after the
    detector when it finds no text box, so the recogniser runs only on images with text."""

    def __init__(self, threads: int):
        import cv2
        from rapidocr_onnxruntime import RapidOCR

        # 0 is "every core" in this project; RapidOCR takes -1 for ONNX Runtime's default.
        budget = threads if 0 < threads <= (os.cpu_count() or 1) else -1
        cv2.setNumThreads(max(threads, 0))
        self.engine = RapidOCR(
            intra_op_num_threads=budget,
            inter_op_num_threads=1,
            text_score=MIN_LINE_SCORE,
            # The angle classifier turns upside-down lines round: rare in photos, and it is
            # a third model call per box.
            use_cls=False,
        )
        self.threads = threads

    def read(self, picture: PILImage.Image) -> TextReading:
        started = time.perf_counter()
        found, stage_seconds = self.engine(picture.convert("RGB"), use_cls=False)
        if not found:
            # Nothing detected (or nothing legible): the detector's time is all there was.
            return TextReading(detect_seconds=time.perf_counter() - started)
        detect, _, recognise = stage_seconds
        return TextReading(
            lines=[" ".join(str(text).split()) for _, text, *_ in found if str(text).strip()],
            detect_seconds=detect,
            recognise_seconds=recognise,
            boxes=len(found),
        )


_reader: TextReader | None = None
_reader_lock = threading.Lock()


def text_reader() -> TextReader:
    """The process's reader, loaded at the first call (about a second; 16 MB of models)."""
    global _reader
    with _reader_lock:
        if _reader is None:
            started = time.perf_counter()
            _reader = TextReader(settings.ENCODER_THREADS)
            logger.info(
                "OCR model loaded in %.1f s (%s threads).",
                time.perf_counter() - started,
                settings.ENCODER_THREADS or "all",
            )
        return _reader


def open_for_reading(path) -> PILImage.Image:
    """An image file decoded small and upright, at no less than the detector's size."""
    picture = open_upright(path, READING_SIDE)
    scale = 2 * READING_SIDE / min(picture.size)
    if scale < 1:  # an original without a preview: more pixels would only cost time
        size = (round(picture.width * scale), round(picture.height * scale))
        picture = picture.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=2.0)
    picture.load()
    return picture


def read_text(path) -> TextReading:
    """The text inside the image file at `path`."""
    return text_reader().read(open_for_reading(path))
