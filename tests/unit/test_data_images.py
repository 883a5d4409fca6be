"""MVTec-layout folder loading, image decoding, splits and the ELPV split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgead.data.base import LazySequence
from edgead.data.datasets import load_image_dataset
from edgead.data.images import MVTecFolder
from edgead.errors import ConfigError, DataError
from edgead.ops.decode import read_image, read_mask
from tests.helpers.data import (
    SYNTHETIC_DEFECTS,
    SYNTHETIC_HW,
    SYNTHETIC_TEST_GOOD,
    SYNTHETIC_TRAIN,
    make_synthetic_mvtec,
)

SIZE = 32


def _rgb(seed: int = 0, hw: tuple[int, int] = (20, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*hw, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ decoding


def test_read_image_converts_every_pixel_format(tmp_path: Path) -> None:
    rgb = _rgb()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full(gray.shape, 7, np.uint8)]))
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "gray16.tif"), gray.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png"), rgb)  # 65535 -> 255
    for name in ("gray.png", "gray16.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (*gray.shape, 3)
        for channel in range(3):
            np.testing.assert_array_equal(out[:, :, channel], gray)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_raises_data_error_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    ok, encoded = cv2.imencode(suffix, _rgb(hw=(64, 64)))
    assert ok
    path.write_bytes(encoded.tobytes()[: len(encoded) * 2 // 3])
    with pytest.raises(DataError, match=r"cut\..*(truncated|corrupt|decode)"):
        read_image(path)


def test_jpeg_with_trailing_bytes_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "trailer.jpg"
    ok, encoded = cv2.imencode(".jpg", _rgb(hw=(16, 16)))
    path.write_bytes(encoded.tobytes() + b"extra trailer data")
    assert read_image(path).shape == (16, 16, 3)


def test_non_image_and_empty_files_raise(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="text.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_read_mask_thresholds_binary_masks_of_any_scale(tmp_path: Path) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1
    for name, scale in (("m01.png", 1), ("m255.png", 255)):
        cv2.imwrite(str(tmp_path / name), mask * scale)
        np.testing.assert_array_equal(read_mask(tmp_path / name), mask.astype(bool))
    cv2.imwrite(str(tmp_path / "zero.png"), np.zeros((4, 4), np.uint8))
    assert not read_mask(tmp_path / "zero.png").any()


# ---------------------------------------------------------------------------------- MVTec folder


def test_mvtec_folder_indexes_and_loads_lazily(synthetic_mvtec: Path) -> None:
    data = MVTecFolder(synthetic_mvtec, SIZE)
    n_bad = sum(SYNTHETIC_DEFECTS.values())
    assert len(data.train_paths) == SYNTHETIC_TRAIN
    train = data.train_images()
    assert isinstance(train, LazySequence) and len(train) == SYNTHETIC_TRAIN
    for image in train:  # RGB, gray, RGBA, 16-bit, JPEG, gray+alpha all come out the same way
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    test = data.test_set()
    assert len(test) == SYNTHETIC_TEST_GOOD + n_bad
    assert test.labels.tolist() == [0] * SYNTHETIC_TEST_GOOD + [1] * n_bad
    assert test.defect_types == ["good"] * SYNTHETIC_TEST_GOOD + ["dent"] + ["scratch"] * 2
    assert [p.parent.name for p in test.paths] == test.defect_types
    assert data.has_masks and test.masks is not None
    masks = test.masks_array()
    assert masks is not None and masks.dtype == bool and masks.shape == (len(test), SIZE, SIZE)
    assert not masks[test.labels == 0].any()
    assert all(m.any() for m in masks[test.labels == 1])
    # The bright defect square lies inside the resized mask.
    image = test.images[SYNTHETIC_TEST_GOOD]
    inside = image[masks[SYNTHETIC_TEST_GOOD]].astype(float).mean(axis=0)
    outside = image[~masks[SYNTHETIC_TEST_GOOD]].astype(float).mean(axis=0)
    assert inside[0] > outside[0] + 60
    assert data.describe()["n_test_defective"] == n_bad


def test_lazy_sequence_subsets_do_not_load(synthetic_mvtec: Path) -> None:
    calls: list[str] = []
    seq = LazySequence(["a", "b", "c", "d"], lambda key: calls.append(key) or key.upper())
    sub = seq[1:3]
    picked = seq[np.array([3, 0])]
    assert calls == [] and len(sub) == 2 and len(picked) == 2
    assert list(sub) == ["B", "C"] and picked[0] == "D" and seq[-1] == "D"
    assert calls == ["b", "c", "d", "d"]


def test_folder_without_ground_truth_has_no_masks(tmp_path: Path) -> None:
    root = make_synthetic_mvtec(tmp_path / "nomask", with_masks=False)
    data = MVTecFolder(root, SIZE)
    assert not data.has_masks
    test = data.test_set()
    assert test.masks is None and test.masks_array() is None


def test_missing_train_good_raises(tmp_path: Path) -> None:
    (tmp_path / "cat" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good does not exist"):
        MVTecFolder(tmp_path / "cat", SIZE)
    with pytest.raises(DataError, match="does not exist"):
        MVTecFolder(tmp_path / "nothing_here", SIZE)


def test_empty_image_folder_raises(synthetic_mvtec: Path) -> None:
    empty = synthetic_mvtec / "test" / "crack"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images .* in .*crack"):
        MVTecFolder(synthetic_mvtec, SIZE)


def test_missing_mask_raises_when_ground_truth_exists(synthetic_mvtec: Path) -> None:
    (synthetic_mvtec / "ground_truth" / "dent" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"no mask for .*dent.*000_mask\.png"):
        MVTecFolder(synthetic_mvtec, SIZE)


def test_mask_size_mismatch_raises(synthetic_mvtec: Path) -> None:
    height, width = SYNTHETIC_HW
    bad = np.zeros((height + 4, width), np.uint8)
    bad[:5] = 255
    cv2.imwrite(str(synthetic_mvtec / "ground_truth" / "scratch" / "001_mask.png"), bad)
    test = MVTecFolder(synthetic_mvtec, SIZE).test_set()
    assert test.masks is not None
    test.masks[SYNTHETIC_TEST_GOOD]  # the dent mask is fine
    with pytest.raises(
        DataError, match=r"001_mask\.png is 48x44 px but its image .*001\.png is 48x40"
    ):
        test.masks[len(test) - 1]


def test_truncated_training_image_raises_on_access(synthetic_mvtec: Path) -> None:
    path = synthetic_mvtec / "train" / "good" / "000.png"
    path.write_bytes(path.read_bytes()[:-40])
    data = MVTecFolder(synthetic_mvtec, SIZE)
    with pytest.raises(DataError, match="000.png"):
        data.train_images()[0]


def test_bad_image_size_raises(synthetic_mvtec: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        MVTecFolder(synthetic_mvtec, 0)


# ------------------------------------------------------------------------------- spec dispatch


def test_load_image_dataset_dispatches(synthetic_mvtec: Path, tmp_path: Path) -> None:
    data = load_image_dataset(str(synthetic_mvtec), SIZE)
    assert isinstance(data, MVTecFolder) and data.image_size == SIZE
    with pytest.raises(DataError, match="neither 'elpv' nor an existing folder"):
        load_image_dataset(tmp_path / "missing", SIZE)


# ---------------------------------------------------------------------------------------- ELPV


@pytest.fixture(scope="module")
def elpv_labels() -> tuple[list[Path], np.ndarray]:
    pytest.importorskip("elpv_dataset", reason="elpv-dataset is not installed (edgead[demo])")
    from edgead.data.elpv import elpv_data_dir, read_elpv_labels

    paths, probs, _ = read_elpv_labels(elpv_data_dir())
    return paths, probs


def test_elpv_normal_only_split(elpv_labels: tuple[list[Path], np.ndarray]) -> None:
    from edgead.data.elpv import ElpvDataset

    paths, probs = elpv_labels
    prob_of = {p: float(q) for p, q in zip(paths, probs, strict=True)}
    data = load_image_dataset("elpv", SIZE, seed=1)
    assert isinstance(data, ElpvDataset) and not data.has_masks
    n_good, n_bad = int(np.sum(probs == 0)), int(np.sum(probs == 1))
    assert len(data.train_paths) == round(0.5 * n_good)
    assert all(prob_of[p] == 0.0 for p in data.train_paths)
    test = data.test_set()
    assert test.masks is None
    assert set(data.train_paths).isdisjoint(test.paths)
    assert [prob_of[p] for p in test.paths] == [float(label) for label in test.labels]
    assert int(test.labels.sum()) == n_bad and len(test) == n_good - len(data.train_paths) + n_bad
    image = test.images[0]
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image[:, :, 0], image[:, :, 2])  # grayscale cells


def test_elpv_caps_are_seeded_and_keep_both_classes(
    elpv_labels: tuple[list[Path], np.ndarray],
) -> None:
    from edgead.data.elpv import ElpvDataset

    first = ElpvDataset(SIZE, seed=5, max_train=10, max_test=12)
    second = ElpvDataset(SIZE, seed=5, max_train=10, max_test=12)
    other = ElpvDataset(SIZE, seed=6, max_train=10, max_test=12)
    assert len(first.train_paths) == 10 and len(first.test_paths) == 12
    assert first.train_paths == second.train_paths and first.test_paths == second.test_paths
    assert first.train_paths != other.train_paths
    assert 0 < int(first.test_labels.sum()) < 12
    with pytest.raises(ConfigError, match="train_fraction"):
        ElpvDataset(SIZE, train_fraction=1.0)
    with pytest.raises(ConfigError, match="max_test"):
        ElpvDataset(SIZE, max_test=1)


def test_load_image_dataset_rejects_elpv_options_for_a_folder(synthetic_mvtec: Path) -> None:
    data = load_image_dataset(synthetic_mvtec, SIZE, seed=3, max_train=None)  # harmless
    assert isinstance(data, MVTecFolder)
    with pytest.raises(ConfigError, match="max_train apply to 'elpv' only"):
        load_image_dataset(synthetic_mvtec, SIZE, max_train=5)
