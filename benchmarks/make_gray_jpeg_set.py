"""Write a development set of small grayscale JPEGs of varying size (MVTec layout) from MPDD.

    .venv/bin/python benchmarks/make_gray_jpeg_set.py --out /tmp/gray_jpeg_set

Real defect sets often look like this: grayscale JPEGs, 100-630 px wide and 220-400 px high,
many narrower than the model input, so training and test images are upscaled along one axis
and shrunk along the other. MPDD (square 512 px RGB PNGs) cannot show what that does to a
detector; this script turns MPDD metal_plate into such a set:

- every output image is a seeded random crop of an MPDD image with the output's aspect ratio,
  resized (OpenCV area) to a width drawn log-uniformly in [100, 630] px and a height drawn
  uniformly in [220, 400] px, converted to grayscale and saved as JPEG (quality 90);
- `--train-crops` crops per normal training image (train/good), `--test-crops` per test image;
  a defective crop is placed so that it holds at least half of the image's defect pixels;
- masks get the same crop and a nearest-neighbour resize and are saved as PNG
  (ground_truth/defective/<stem>_mask.png).

The data goes to `--out` (e.g. /tmp or benchmarks/results/, both outside git); never commit it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTH_PX = (100, 630)
HEIGHT_PX = (220, 400)
JPEG_QUALITY = 90
_MIN_DEFECT_SHARE = 0.5
_TRIES = 50


def _mpdd_root() -> Path:
    env = os.environ.get("EDGEAD_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "datasets"
    return root / "mpdd_metal_plate"


def _out_size(rng: np.random.Generator) -> tuple[int, int]:
    """(H, W) px: width log-uniform in WIDTH_PX, height uniform in HEIGHT_PX."""
    width = int(round(np.exp(rng.uniform(np.log(WIDTH_PX[0]), np.log(WIDTH_PX[1])))))
    height = int(rng.integers(HEIGHT_PX[0], HEIGHT_PX[1] + 1))
    return height, width


def _crop_box(
    shape_hw: tuple[int, int], out_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of a random crop with the aspect ratio of `out_hw`, 45-95 % of the side."""
    img_h, img_w = shape_hw
    aspect = out_hw[1] / out_hw[0]
    crop_h = rng.uniform(0.45, 0.95) * img_h
    crop_w = crop_h * aspect
    if crop_w > img_w:  # wide outputs: limited by the image width
        crop_w, crop_h = float(img_w), img_w / aspect
    crop_h, crop_w = max(8, int(round(crop_h))), max(8, int(round(crop_w)))
    y0 = int(rng.integers(0, img_h - crop_h + 1))
    x0 = int(rng.integers(0, img_w - crop_w + 1))
    return y0, x0, crop_h, crop_w


def _defect_box(
    mask: np.ndarray, out_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A crop box holding >= half of the mask's pixels (the best of `_TRIES` draws otherwise)."""
    total = max(int(mask.sum()), 1)
    best, best_share = _crop_box(mask.shape, out_hw, rng), -1.0
    for _ in range(_TRIES):
        box = _crop_box(mask.shape, out_hw, rng)
        y0, x0, h, w = box
        share = float(mask[y0 : y0 + h, x0 : x0 + w].sum()) / total
        if share > best_share:
            best, best_share = box, share
        if share >= _MIN_DEFECT_SHARE:
            break
    return best


def _write(
    image: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int], path: Path
) -> None:
    y0, x0, h, w = box
    gray = cv2.cvtColor(image[y0 : y0 + h, x0 : x0 + w], cv2.COLOR_BGR2GRAY)
    gray = cv2.resize(gray, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), gray, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def build(src: Path, out: Path, train_crops: int, test_crops: int, seed: int) -> dict[str, int]:
    """Write the set; returns counts per split."""
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test_good": 0, "test_defective": 0}
    for path in sorted((src / "train" / "good").glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        for k in range(train_crops):
            out_hw = _out_size(rng)
            box = _crop_box(image.shape[:2], out_hw, rng)
            _write(image, box, out_hw, out / "train" / "good" / f"{path.stem}_{k}.jpg")
            counts["train"] += 1
    for defect in ("good", "defective"):
        for path in sorted((src / "test" / defect).glob("*.png")):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            mask = None
            if defect != "good":
                mask_path = src / "ground_truth" / defect / f"{path.stem}_mask.png"
                mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
            for k in range(test_crops):
                out_hw = _out_size(rng)
                if mask is None:
                    box = _crop_box(image.shape[:2], out_hw, rng)
                else:
                    box = _defect_box(mask, out_hw, rng)
                stem = f"{path.stem}_{k}"
                _write(image, box, out_hw, out / "test" / defect / f"{stem}.jpg")
                if mask is not None:
                    y0, x0, h, w = box
                    crop = mask[y0 : y0 + h, x0 : x0 + w].astype(np.uint8) * 255
                    crop = cv2.resize(crop, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
                    mask_out = out / "ground_truth" / defect / f"{stem}_mask.png"
                    mask_out.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(mask_out), crop)
                counts[f"test_{defect}"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """Build the set and log its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=_mpdd_root())
    parser.add_argument("--out", type=Path, default=Path("/tmp/gray_jpeg_set"))
    parser.add_argument("--train-crops", type=int, default=4)
    parser.add_argument("--test-crops", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; pass a new --out folder")
    counts = build(args.src, args.out, args.train_crops, args.test_crops, args.seed)
    logging.getLogger("make_gray_jpeg_set").info("wrote %s: %s", args.out, counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
