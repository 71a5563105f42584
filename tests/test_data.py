"""Data: both layouts, conversions, subset, caching, and errors that name the problem."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.config import DataConfig
from maelab.data import DataError, ImageData, class_balanced_subset, load_data, load_split, split_holdout

from .conftest import write_image_folder


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))


def test_image_folder_sorted_and_exact(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d", per_class=12)
    data = load_split(root, "train")
    assert data.classes == ["cat", "dog"]
    assert data.images.shape == (24, 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0] * 12 + [1] * 12
    # Numeric order inside a class: 0, 1, 2, ..., 10, 11 (not 0, 1, 10, 11, 2, ...).
    expected = np.asarray(Image.open(root / "train" / "cat" / "10.png")).transpose(2, 0, 1)
    assert np.array_equal(data.images[10].numpy(), expected)


def test_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d")
    first = load_split(root, "test")
    cached = list((tmp_path / "cache").glob("folder-test-*.npz"))
    assert len(cached) == 1
    assert torch.equal(load_split(root, "test").images, first.images)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "cat" / "0.png")  # the folder changed
    changed = load_split(root, "test")
    assert changed.images[0].sum() == 0
    assert len(list((tmp_path / "cache").glob("folder-test-*.npz"))) == 2


def test_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    d = tmp_path / "m" / "train" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 200, np.uint8), "L").save(d / "gray.png")
    Image.fromarray(np.full((4, 4, 4), 100, np.uint8), "RGBA").save(d / "rgba.png")
    Image.fromarray(np.full((4, 4), 3, np.uint8), "L").convert("P").save(d / "pal.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(d / "s16.png")
    data = load_split(tmp_path / "m", "train")
    assert data.images.shape == (4, 3, 4, 4)
    by_name = dict(zip(["gray", "pal", "rgba", "s16"], data.images[:, 0, 0, 0].tolist(), strict=True))
    assert by_name == {"gray": 200, "pal": 3, "rgba": 100, "s16": 255}


def test_bad_files_are_listed_or_skipped(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "trunc.png").write_bytes((root / "train" / "dog" / "0.png").read_bytes()[:40])
    with pytest.raises(DataError, match="(?s)2 file.*notes.txt.*--skip-bad-images") as e:
        load_split(root, "train")
    assert "trunc.png" in str(e.value)
    with pytest.warns(UserWarning, match="skipped 2"):
        assert len(load_split(root, "train", skip_bad_images=True)) == 12


def test_mixed_sizes_error_or_resize(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / "dog" / "big.png")
    with pytest.raises(DataError, match="(?s)big.png is 16x16.*--resize"):
        load_split(root, "train")
    assert load_split(root, "train", resize=True).images.shape == (13, 3, 8, 8)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir .*nope: no such directory"):
        load_split(tmp_path / "nope", "train")
    (tmp_path / "e" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="empty class folder.*a"):
        load_split(tmp_path / "e", "train")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="neither"):
        load_split(tmp_path / "x", "train")


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_image_folder(tmp_path / "d")
    monkeypatch.setenv("MAELAB_DATA", str(root))
    assert len(load_split(None, "train")) == 12
    monkeypatch.delenv("MAELAB_DATA")
    with pytest.raises(DataError, match="--data-dir"):
        load_split(None, "train")


def _write_batches(root: Path) -> tuple[np.ndarray, list[int]]:
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_rows, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        with open(batches / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels, b"batch_label": name.encode()}, f)
        if name != "test_batch":
            all_rows.append(rows)
            all_labels += labels
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return np.concatenate(all_rows), all_labels


def test_cifar10_python_batches(tmp_path: Path) -> None:
    rows, labels = _write_batches(tmp_path / "c")
    data = load_split(tmp_path / "c", "train")  # auto-detected
    assert data.images.shape == (20, 3, 32, 32)
    assert np.array_equal(data.images.numpy().reshape(20, -1), rows)  # CHW rows, as the official format
    assert data.labels.tolist() == labels and data.classes[3] == "c3"
    assert len(load_split(tmp_path / "c" / "cifar-10-batches-py", "test", dataset="cifar10")) == 4


def test_cifar10_batches_refuse_code(tmp_path: Path) -> None:
    batches = tmp_path / "c" / "cifar-10-batches-py"
    _write_batches(tmp_path / "c")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    with open(batches / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="test_batch.*refusing"):
        load_split(tmp_path / "c", "test")
    assert not marker.exists()


def test_cifar10_missing_names_data_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--data-dir"):
        load_split(tmp_path / "empty", "train", dataset="cifar10")


def test_class_balanced_subset(tmp_path: Path) -> None:
    data = load_split(write_image_folder(tmp_path / "d", per_class=10), "train")
    sub = class_balanced_subset(data, 8)
    assert sub.labels.tolist() == [0] * 4 + [1] * 4
    assert torch.equal(sub.images[:4], data.images[:4])
    with pytest.raises(DataError, match="--subset 1"):
        class_balanced_subset(data, 1)


def test_real_cifar10_layout(cifar_dir: Path) -> None:
    test = load_split(cifar_dir, "test")
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"


def test_no_readable_images(tmp_path: Path) -> None:
    d = tmp_path / "n" / "train" / "a"
    d.mkdir(parents=True)
    (d / "readme.txt").write_text("no images here")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable images"):
        load_split(tmp_path / "n", "train", skip_bad_images=True)


def test_holdout_is_class_balanced_disjoint_from_the_subset_and_from_the_end() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # 5 images per class
    data = ImageData(torch.arange(10).view(10, 1, 1, 1).to(torch.uint8), labels, ["a", "b"])
    rest, held = split_holdout(data, 4)
    assert held.images.flatten().tolist() == [6, 7, 8, 9]  # the last 2 of each class
    assert rest.images.flatten().tolist() == [0, 1, 2, 3, 4, 5]
    sub = class_balanced_subset(rest, 6)
    assert not set(sub.images.flatten().tolist()) & set(held.images.flatten().tolist())
    with pytest.raises(DataError, match="--holdout 12"):
        split_holdout(data, 12)
    with pytest.raises(DataError, match="--subset 1"):
        class_balanced_subset(data, 1)


def test_load_data_train_val_test_from_the_data_options(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "f", per_class=6, size=8)
    d = DataConfig(data_dir=str(root), holdout=4, subset=6)
    train, val, test = (load_data(d, s, 8) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 4, 12)
    pixels = {tuple(x.flatten().tolist()) for x in train.images}
    assert not pixels & {tuple(x.flatten().tolist()) for x in val.images}  # never pretrained on
    assert len(load_data(d, "train", 8, subset=0)) == 8  # all but the held-out images
    with pytest.raises(DataError, match="--holdout 0"):
        load_data(DataConfig(data_dir=str(root)), "val", 8)
