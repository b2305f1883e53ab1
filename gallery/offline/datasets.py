"""Labelled image datasets for `evaluate`: each reader yields (path, caption, class) items.

Readers: a folder per class, a CSV of path,caption[,class], the Tux Paint stamps installed by
Debian's `tuxpaint-stamps-default`, and Fashion-MNIST from Debian's `dataset-fashion-mnist`.
"""

import csv
import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from gallery.errors import InvalidInput
from gallery.library.validation import IMAGE_FILE_EXTENSIONS

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
FORMATS = ("auto", "folder", "csv", "tuxpaint", "fashion-mnist")


class DatasetError(InvalidInput):
    """A dataset that cannot be read; the message says what was expected."""


@dataclass
class LabeledImage:
    path: Path
    caption: str
    label: str


@dataclass
class Dataset:
    name: str
    items: list[LabeledImage]
    classes: list[str] = field(default_factory=list)
    has_captions: bool = False

    def __post_init__(self):
        if not self.classes:
            self.classes = sorted({item.label for item in self.items if item.label})


def load_dataset(
    source: str,
    *,
    format: str = "auto",
    limit_per_class: int | None = None,
    workdir: Path | None = None,
) -> Dataset:
    """Read a dataset; `source` is a path, or `tuxpaint` / `fashion-mnist` for Debian's copy."""
    path = Path(source)
    if format == "auto":
        format = _detect(source, path)
    readers = {
        "folder": lambda: read_class_folders(path),
        "csv": lambda: read_csv(path),
        "tuxpaint": lambda: read_tuxpaint(TUXPAINT_STAMPS if source == "tuxpaint" else path),
        "fashion-mnist": lambda: read_fashion_mnist(
            FASHION_MNIST if source == "fashion-mnist" else path,
            workdir=workdir,
            limit_per_class=limit_per_class,
        ),
    }
    if format not in readers:
        raise DatasetError(f"Unknown dataset format {format!r}; use one of {', '.join(FORMATS)}.")
    dataset = readers[format]()
    if limit_per_class:
        dataset.items = _limit(dataset.items, limit_per_class)
    if not dataset.items:
        raise DatasetError(f"No images found in {source}.")
    return dataset


def _detect(source: str, path: Path) -> str:
    if source in ("tuxpaint", "fashion-mnist"):
        return source
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if path.is_dir():
        if list(path.glob("*-images-idx3-ubyte*")):
            return "fashion-mnist"
        if list(path.rglob("*.txt")) and list(path.rglob("*.png")) and "stamps" in str(path):
            return "tuxpaint"
        return "folder"
    raise DatasetError(
        f"{source} is neither a folder, a .csv file, 'tuxpaint' nor 'fashion-mnist'."
    )


def _limit(items: list[LabeledImage], per_class: int) -> list[LabeledImage]:
    counts: dict[str, int] = {}
    kept = []
    for item in items:
        if counts.get(item.label, 0) < per_class:
            counts[item.label] = counts.get(item.label, 0) + 1
            kept.append(item)
    return kept


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_FILE_EXTENSIONS


def read_class_folders(root: Path) -> Dataset:
    """DATASET/<class>/*.jpg: the folder name is the class; no captions."""
    items = [
        LabeledImage(path, "", folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.rglob("*"))
        if _is_image(path)
    ]
    return Dataset(root.name, items)


def read_csv(csv_path: Path) -> Dataset:
    """A CSV of path,caption[,class]; paths relative to the CSV's folder; header optional."""
    items = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and row[0].strip().lower() == "path"):
                continue
            if len(row) < 2:
                raise DatasetError(f"{csv_path}:{number}: expected path,caption[,class].")
            path = (csv_path.parent / row[0].strip()).resolve()
            if not path.is_file():
                raise DatasetError(f"{csv_path}:{number}: {row[0]} does not exist.")
            label = row[2].strip() if len(row) > 2 and row[2].strip() else row[1].strip()
            items.append(LabeledImage(path, row[1].strip(), label))
    return Dataset(csv_path.stem, items, has_captions=True)


def read_tuxpaint(root: Path) -> Dataset:
    """Tux Paint stamps: each PNG's .txt starts with an English caption; category = class.

    Letter stamps (symbols/alphabets) are left out: their captions are single letters.
    """
    if not root.is_dir():
        raise DatasetError(
            f"{root} does not exist: install the stamps with "
            "`apt-get install tuxpaint-stamps-default`."
        )
    items = []
    for png in sorted(root.rglob("*.png")):
        relative = png.relative_to(root)
        if "alphabets" in relative.parts or png.stem.endswith(("_mirror", "_flip")):
            continue
        caption_file = png.with_suffix(".txt")
        if not caption_file.is_file():
            continue
        lines = caption_file.read_text(encoding="utf-8", errors="replace").splitlines()
        caption = lines[0].strip() if lines else ""
        if caption:
            items.append(LabeledImage(png, caption, relative.parts[0]))
    return Dataset("tuxpaint-stamps", items, has_captions=True)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    _, kind, dimensions = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(f">{dimensions}I", data[4 : 4 + 4 * dimensions])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def read_fashion_mnist(
    root: Path, *, workdir: Path | None, split: str = "t10k", limit_per_class: int | None = None
) -> Dataset:
    """Fashion-MNIST's test split, written out as PNG files; class names as labels."""
    images_file = next(iter(sorted(root.glob(f"{split}-images-idx3-ubyte*"))), None)
    labels_file = next(iter(sorted(root.glob(f"{split}-labels-idx1-ubyte*"))), None)
    if images_file is None or labels_file is None:
        raise DatasetError(
            f"No Fashion-MNIST idx files in {root}: install them with "
            "`apt-get install dataset-fashion-mnist`."
        )
    if workdir is None:
        raise DatasetError("Fashion-MNIST needs a folder to write its PNG files to.")
    images, labels = _read_idx(images_file), _read_idx(labels_file)
    items, counts = [], {}
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        name = FASHION_MNIST_CLASSES[int(label)]
        if limit_per_class and counts.get(name, 0) >= limit_per_class:
            continue
        counts[name] = counts.get(name, 0) + 1
        path = workdir / f"fashion-{index:05d}.png"
        PILImage.fromarray(pixels, mode="L").save(path)
        items.append(LabeledImage(path, "", name))
    return Dataset("fashion-mnist", items, classes=list(FASHION_MNIST_CLASSES))
