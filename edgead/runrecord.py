"""The typed record of a run's hold-out split, stored in the run directory (`split.json`).

Training draws a seeded split of the normal training data into fit and held-out validation
inputs; the threshold and normalisation come from the validation scores. Export needs the same
validation inputs again (a compressed index or int8 graph re-fits the threshold on them), so
the run stores WHICH inputs they were, plus a fingerprint of the data they were drawn from,
instead of export re-making the split by calling training code:

- images: the positions of the held-out images in the data set's training images and their
  file names; the fingerprint hashes every training file's name and size, in order.
- tables: the held-out row numbers of the table; the fingerprint hashes the float32 feature
  matrix (shape and bytes).

`RunSplit.check_fingerprint` tells export whether the data at the run's path is still the data
the run was made of. Runs written before this record existed have no `split.json`
(`edgead.rundir.load_split` returns None and export logs that it cannot re-fit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import DataError

SPLIT_JSON = "split.json"
SPLIT_SCHEMA = 1
MODALITIES = ("image", "tabular")


def image_fingerprint(paths: Sequence[str | Path]) -> str:
    """The "sha256:<hex>" fingerprint of training image files: each one's name and size, in order.

    Raises:
        DataError: a file cannot be read (its size is unknown).
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            size = Path(path).stat().st_size
        except OSError as exc:
            raise DataError(f"cannot read training image {path}: {exc}") from exc
        digest.update(f"{Path(path).name}\t{size}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def table_fingerprint(features: np.ndarray) -> str:
    """The "sha256:<hex>" fingerprint of a float32 (N, D) feature matrix: its shape and bytes."""
    array = np.ascontiguousarray(features, dtype=np.float32)
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class RunSplit:
    """Which normal inputs a run held out for its threshold, and of what data.

    modality: "image" or "tabular".
    n_items: how many items the split was drawn from (training images; table rows).
    val_index: sorted positions of the held-out items (int, 0 <= i < n_items).
    val_names: file names of the held-out images (images), None for tables.
    fingerprint: `image_fingerprint` / `table_fingerprint` of the data at training time.
    """

    modality: str
    n_items: int
    val_index: tuple[int, ...]
    fingerprint: str
    val_names: tuple[str, ...] | None = None

    @classmethod
    def of_images(cls, paths: Sequence[str | Path], val_index: Sequence[int]) -> RunSplit:
        """The record of `val_index` drawn from the training image files `paths`."""
        index = tuple(int(i) for i in val_index)
        return cls(
            modality="image",
            n_items=len(paths),
            val_index=index,
            fingerprint=image_fingerprint(paths),
            val_names=tuple(Path(paths[i]).name for i in index),
        )

    @classmethod
    def of_rows(cls, features: np.ndarray, val_rows: Sequence[int]) -> RunSplit:
        """The record of the table rows `val_rows` of the float32 (N, D) `features`."""
        return cls(
            modality="tabular",
            n_items=int(len(features)),
            val_index=tuple(int(i) for i in val_rows),
            fingerprint=table_fingerprint(features),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (schema `SPLIT_SCHEMA`)."""
        return {
            "schema": SPLIT_SCHEMA,
            "modality": self.modality,
            "n_items": self.n_items,
            "fingerprint": self.fingerprint,
            "val_index": list(self.val_index),
            "val_names": None if self.val_names is None else list(self.val_names),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = SPLIT_JSON) -> RunSplit:
        """The record in `data` (parsed split.json), validated.

        Raises:
            DataError: another schema, a wrong type, positions out of range, or names that do
                not match the positions; the message says to retrain the run.
        """
        fix = "retrain the run with `edgead train` to store its split again"
        if not isinstance(data, dict) or data.get("schema") != SPLIT_SCHEMA:
            raise DataError(f"{where}: not a schema-{SPLIT_SCHEMA} split record; {fix}")
        try:
            modality, n_items = str(data["modality"]), int(data["n_items"])
            index = tuple(int(i) for i in data["val_index"])
            names = data.get("val_names")
            record = cls(
                modality=modality,
                n_items=n_items,
                val_index=index,
                fingerprint=str(data["fingerprint"]),
                val_names=None if names is None else tuple(str(n) for n in names),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: malformed split record ({exc}); {fix}") from exc
        if modality not in MODALITIES or n_items < 0:
            raise DataError(f"{where}: modality {modality!r} / n_items {n_items}; {fix}")
        if any(not 0 <= i < n_items for i in index):
            raise DataError(f"{where}: held-out positions outside 0..{n_items - 1}; {fix}")
        if record.val_names is not None and len(record.val_names) != len(index):
            raise DataError(f"{where}: {len(index)} positions but a different number of names")
        return record

    def check_images(self, paths: Sequence[str | Path]) -> str | None:
        """None when `paths` are the training images the split was drawn from, else why not."""
        if len(paths) != self.n_items:
            return f"the data has {len(paths)} training images, the run drew from {self.n_items}"
        if image_fingerprint(paths) != self.fingerprint:
            return "the training images' names or sizes changed since the run"
        names = tuple(Path(paths[i]).name for i in self.val_index)
        if self.val_names is not None and names != self.val_names:
            return "the held-out images' names differ from the run's record"
        return None

    def check_rows(self, features: np.ndarray) -> str | None:
        """None when `features` is the table the split was drawn from, else why not."""
        if len(features) != self.n_items:
            return f"the table has {len(features)} rows, the run drew from {self.n_items}"
        if table_fingerprint(features) != self.fingerprint:
            return "the table's values changed since the run"
        return None
