"""Images -> one uint8 tensor per split, decoded once and cached outside the repository.

Two layouts are read:

- an image folder ``ROOT/{train,test}/<class>/<files>`` (anything Pillow opens; converted to RGB;
  classes and files in sorted order, numbers in names sorted numerically);
- the official CIFAR-10 python batches ``cifar-10-batches-py/`` (read with a restricted unpickler
  that only rebuilds numpy arrays), downloadable through torchvision when the network allows.

Decoded arrays are cached under ``$MAELAB_CACHE`` (default ``~/.cache/maelab``), keyed by the
folder's file list, sizes and modification times, so a changed folder is read again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maelab.config import DataConfig

CACHE_VERSION = 1


class DataError(ValueError):
    """The data cannot be found or read; the message names the path and what to do."""


@dataclass
class ImageData:
    """A split held as tensors: images (N, C, H, W) uint8, labels (N,) int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageData:
        """Move the whole split to ``device`` (one copy; batches are index slices afterwards)."""
        return ImageData(self.images.to(device), self.labels.to(device), self.classes)


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$MAELAB_CACHE`` or ``~/.cache/maelab``."""
    return Path(os.environ.get("MAELAB_CACHE", Path.home() / ".cache" / "maelab"))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data root from ``--data-dir`` or ``$MAELAB_DATA``; a clear error if neither exists."""
    raw = str(data_dir) if data_dir else os.environ.get("MAELAB_DATA", "")
    if not raw:
        raise DataError(
            "no data directory: pass --data-dir ROOT (ROOT/train/<class>/*.png or cifar-10-batches-py) "
            "or set MAELAB_DATA"
        )
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-dir {raw}: no such directory")
    return root


def _batches_dir(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    return None


def detect_layout(root: Path) -> str:
    """``folder`` if ROOT/train exists, ``cifar10`` if the python batches are there."""
    if _batches_dir(root) is not None:
        return "cifar10"
    if (root / "train").is_dir():
        return "folder"
    raise DataError(
        f"--data-dir {root}: found neither {root}/train/<class>/<images> nor cifar-10-batches-py; "
        "point --data-dir at one of them (or use --dataset cifar10 --download)"
    )


def load_split(
    data_dir: str | os.PathLike | None,
    split: str,
    dataset: str = "auto",
    image_size: int | None = None,
    resize: bool = False,
    skip_bad_images: bool = False,
    download: bool = False,
) -> ImageData:
    """Load ``split`` ('train' or 'test') of a data root as uint8 tensors (N, 3, H, W), on the CPU."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    root = resolve_data_dir(data_dir)
    layout = dataset
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "cifar10":
        data = load_cifar10_batches(root, split, download)
        if image_size is not None and data.images.shape[-1] != image_size:
            raise DataError(f"CIFAR-10 images are 32x32 but --img-size is {image_size}")
        return data
    if layout == "folder":
        return load_image_folder(root, split, image_size, resize, skip_bad_images)
    raise DataError(f"--dataset must be auto, folder or cifar10, got {dataset!r}")


# ---------------------------------------------------------------------------------- image folder
def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _list_folder(split_dir: Path) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int, int]]]:
    """Classes, (file, label) pairs and (name, size, mtime) stamps of ``split_dir/<class>/*``, sorted."""
    classes = sorted(
        (d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=_natural_key
    )
    if not classes:
        raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<images>)")
    files: list[tuple[str, int]] = []  # plain strings: 50k Path objects cost seconds
    stamps: list[tuple[str, int, int]] = []
    empty = []
    for label, name in enumerate(classes):
        # os.scandir: one directory read, file types without a stat per file (50k files in ~1 s).
        with os.scandir(split_dir / name) as it:
            entries = sorted(
                (e for e in it if e.is_file() and not e.name.startswith(".")), key=lambda e: _natural_key(e.name)
            )
        if not entries:
            empty.append(name)
        for e in entries:
            st = e.stat()
            files.append((e.path, label))
            stamps.append((f"{name}/{e.name}", st.st_size, st.st_mtime_ns))
    if empty:
        raise DataError(f"{split_dir}: empty class folder(s): {', '.join(empty)}; remove them or add images")
    return classes, files, stamps


def _decode(path: str, size: int | None, resize: bool) -> np.ndarray:
    """One image file -> (H, W, 3) uint8. Grayscale, palette, RGBA and 16-bit are converted."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit (or 32-bit integer) grey: keep the top 8 bits instead of clipping at 255.
            arr = np.asarray(img, dtype=np.int64)
            shift = 8 if arr.max(initial=0) > 255 else 0
            img = Image.fromarray((arr >> shift).clip(0, 255).astype(np.uint8))
        rgb = img.convert("RGB")
    if size is not None and rgb.size != (size, size):
        if not resize:
            raise _SizeMismatch(f"{rgb.size[0]}x{rgb.size[1]}")
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


class _SizeMismatch(Exception):
    pass


def load_image_folder(
    root: Path, split: str, image_size: int | None = None, resize: bool = False, skip_bad_images: bool = False
) -> ImageData:
    """Decode ``root/split/<class>/*`` once (cached) into uint8 tensors (N, 3, H, W)."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"--data-dir {root}: missing {split_dir} (expected {root}/{{train,test}}/<class>/<images>)")
    classes, files, stamps = _list_folder(split_dir)
    if image_size is None:  # the first readable image decides the size
        for f, _ in files:
            try:
                with Image.open(f) as img:
                    image_size = img.size[0] if img.size[0] == img.size[1] else None
                break
            except Exception:
                continue
    key_src = json.dumps([CACHE_VERSION, str(root.resolve()), split, image_size, resize, skip_bad_images, stamps])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    cache = cache_dir() / f"folder-{split}-{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return ImageData(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]).long(), list(z["classes"]))

    def work(item: tuple[str, int]) -> np.ndarray | str:
        path = item[0]
        try:
            return _decode(path, image_size, resize)
        except _SizeMismatch as e:
            return f"size:{path} is {e}, expected {image_size}x{image_size}"
        except Exception as e:
            return f"bad:{path} ({type(e).__name__}: {e})"

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = list(pool.map(work, files))
    problems = [d for d in decoded if isinstance(d, str)]
    sizes = [d[5:] for d in problems if d.startswith("size:")]
    bad = [d[4:] for d in problems if d.startswith("bad:")]
    if sizes:
        raise DataError(
            f"{split_dir}: {len(sizes)} image(s) differ in size from {image_size}x{image_size}, e.g.\n  "
            + "\n  ".join(sizes[:10])
            + "\npass --resize to resize them (bicubic), or fix the data"
        )
    if bad and not skip_bad_images:
        raise DataError(
            f"{split_dir}: {len(bad)} file(s) could not be read as images:\n  "
            + "\n  ".join(bad[:20])
            + ("\n  ..." if len(bad) > 20 else "")
            + "\nremove them, or pass --skip-bad-images to skip them"
        )
    if bad:
        warnings.warn(f"{split_dir}: skipped {len(bad)} unreadable file(s), e.g. {bad[0]}", stacklevel=2)
    keep = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    if not keep:
        raise DataError(f"{split_dir}: no readable images")
    images = np.stack([decoded[i] for i in keep]).transpose(0, 3, 1, 2).copy()  # (N, 3, H, W)
    labels = np.array([files[i][1] for i in keep], dtype=np.int64)
    _save_cache(cache, images=images, labels=labels, classes=np.array(classes))
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels), classes)


def _save_cache(path: Path, **arrays: np.ndarray) -> None:
    from maelab.checkpoint import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(path, write)
    except OSError as e:  # a read-only or full cache costs time, never the run
        warnings.warn(f"could not cache decoded images at {path}: {e}", stacklevel=3)


# ---------------------------------------------------------------------------------- CIFAR-10 batches
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds the numpy arrays, lists and dicts of the CIFAR batches; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data batch")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        images = np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(data["labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    return images, labels


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10_batches(root: Path, split: str, download: bool = False) -> ImageData:
    """Read ``cifar-10-batches-py`` (optionally downloading it into ``root`` via torchvision)."""
    batches = _batches_dir(root)
    if batches is None and download:
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(str(root), train=True, download=True)
        except Exception as e:
            raise DataError(
                f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}); without network, put "
                "cifar-10-batches-py (or an image folder) there and pass it as --data-dir"
            ) from e
        batches = _batches_dir(root)
    if batches is None:
        raise DataError(
            f"--data-dir {root}: no cifar-10-batches-py/ (data_batch_1..5, test_batch) found; point --data-dir at "
            "it, or add --download when the network allows"
        )
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (batches / n).is_file()]
    if missing:
        raise DataError(f"{batches}: missing {', '.join(missing)}")
    parts = [_read_batch(batches / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    meta = batches / "batches.meta"
    classes = CIFAR10_CLASSES
    if meta.is_file():
        try:
            raw = _NumpyOnlyUnpickler(io.BytesIO(meta.read_bytes()), encoding="bytes").load()
            names_raw = raw.get(b"label_names") or raw.get("label_names")
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_raw]
        except Exception:
            classes = CIFAR10_CLASSES
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels), classes)


def class_balanced_indices(labels: torch.Tensor, num_classes: int, n: int, from_end: bool = False) -> torch.Tensor:
    """Sorted indices (n // num_classes * num_classes,) of the first (or last) ``n // num_classes``
    images of each class in data order; raises when a class has fewer. The one class-balanced pick."""
    per_class = n // num_classes
    if per_class < 1:
        raise DataError(f"{n} images cannot be class-balanced over {num_classes} classes")
    idx = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise DataError(f"{n} class-balanced images need {per_class} of class {c}, which has only {len(members)}")
        idx.append(members[-per_class:] if from_end else members[:per_class])
    return torch.cat(idx).sort().values


def class_balanced_subset(data: ImageData, n: int) -> ImageData:
    """The first ``n // num_classes`` images of each class (data order), so every seed sees the same subset."""
    try:
        keep = class_balanced_indices(data.labels, len(data.classes), n)
    except DataError as e:
        raise DataError(f"--subset {n}: {e}") from e
    return ImageData(data.images[keep], data.labels[keep], data.classes)


def split_holdout(data: ImageData, holdout: int) -> tuple[ImageData, ImageData]:
    """(rest, held_out): the LAST ``holdout // num_classes`` images of each class are held out as a
    validation split of the training set, so a class-balanced ``--subset`` (the first images of each
    class) never overlaps it while subset + holdout fit in the class."""
    try:
        held = class_balanced_indices(data.labels, len(data.classes), holdout, from_end=True)
    except DataError as e:
        raise DataError(f"--holdout {holdout}: {e}") from e
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[held] = False
    rest = ImageData(data.images[keep], data.labels[keep], data.classes)
    return rest, ImageData(data.images[held], data.labels[held], data.classes)


SPLITS = ("train", "val", "test")


def load_data(d: DataConfig, split: str, img_size: int | None, subset: int | None = None) -> ImageData:
    """A split as the data options describe it. ``train``: the training images minus the held-out ones
    (``d.holdout``), then a class-balanced ``subset`` (default ``d.subset``; 0 = all); ``val``: the
    held-out training images; ``test``: the test images (``subset`` applies too)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "val" and d.holdout <= 0:
        raise DataError("--split val scores on the held-out training images, but this run has --holdout 0")
    data = load_split(
        d.data_dir or None, "test" if split == "test" else "train", d.dataset, img_size, d.resize, d.skip_bad_images,
        d.download,
    )  # fmt: skip
    if split != "test" and d.holdout:
        rest, held = split_holdout(data, d.holdout)
        data = held if split == "val" else rest
    n = (d.subset if split == "train" else 0) if subset is None else subset
    return class_balanced_subset(data, n) if n else data
