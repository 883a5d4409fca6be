"""Training-time feature extraction through ONNX Runtime (CPU), checked against torch.

The backbone is frozen, so the features a detector is fitted on may come from any engine that
computes the same function. On CPUs ONNX Runtime runs EfficientNet-Lite0's depthwise convolutions
several times faster than torch's eager mode. `OrtFeatures.build` exports the module to ONNX in
memory (opset 17, dynamic batch), runs one parity check on the first `PARITY_IMAGES` real images
against torch and is used only when the largest difference is within `PARITY_RTOL` of the
largest output value; otherwise (or when onnxruntime / the exporter fail) it returns None and
the caller uses torch, with a warning in the log.

The export traces the module on one image (tracing runs it once; the batch axis is dynamic):
~2 s for EfficientNet-Lite0 on 2 idle cores, about what ONNX Runtime then saves on 50 training
images at 224 px compared with torch. The exported graph is kept in a local cache
(`$EDGEAD_CACHE_DIR/onnx_features/`, default `~/.cache/edgead/onnx_features/`), named by a
sha256 of the module's structure, weights, input shape and the exporter's versions. Beside it,
`<name>.parity.json` records a passed parity check: the graph's sha256, the onnxruntime version
and the measured difference. A cached graph whose bytes and runtime match its record is used
without running torch again (~0.1 s saved per fit, logged with the recorded difference); any
other cached graph goes through the parity check, and a bad or unreadable one is exported again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead._io import write_bytes_atomic

logger = logging.getLogger(__name__)

#: ONNX opset of the in-memory graph (the bundle exporter's opset).
OPSET = 17
#: largest |ORT - torch| allowed, relative to the largest |torch| output value (fp32).
PARITY_RTOL = 1e-4
#: images of the first batch the parity check runs through both engines.
PARITY_IMAGES = 4


def cache_dir() -> Path:
    """Folder of cached feature graphs: $EDGEAD_CACHE_DIR/onnx_features, else
    ~/.cache/edgead/onnx_features."""
    root = os.environ.get("EDGEAD_CACHE_DIR") or str(Path("~/.cache/edgead").expanduser())
    return Path(root).expanduser() / "onnx_features"


def module_fingerprint(module: nn.Module, example: torch.Tensor) -> str:
    """sha256 hex of what the exported graph depends on: the module's structure, every
    parameter and buffer, the example's dtype and shape after the batch axis, the ONNX opset
    and the torch version."""
    digest = hashlib.sha256()
    digest.update(repr(module).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{example.dtype}{tuple(example.shape[1:])}{OPSET}{torch.__version__}".encode())
    return digest.hexdigest()


def _export_bytes(module: nn.Module, example: torch.Tensor, path: Path) -> bytes:
    """The module as ONNX (opset `OPSET`, dynamic batch), from the cached file `path` or
    exported now and written there (a cache that cannot be written is skipped, logged at debug
    level)."""
    try:
        data = path.read_bytes()
        logger.debug("feature graph from the cache: %s", path)
        return data
    except OSError:
        pass
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(  # tracing runs the module once: one image is enough (dynamic batch)
            module,
            (example[:1],),
            buf,
            opset_version=OPSET,
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            do_constant_folding=True,
        )
    data = buf.getvalue()
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        logger.debug("feature graph not cached (%s)", exc)
    return data


def _drop_cached(path: Path) -> bool:
    """Remove the cached graph `path` and its parity record (the graph failed to load or to
    match torch); whether there was a graph."""
    _parity_record(path).unlink(missing_ok=True)
    try:
        path.unlink()
    except OSError:
        return False
    return True


#: largest parity record read, bytes (a record is ~200 bytes).
MAX_RECORD_BYTES = 4096


def _parity_record(path: Path) -> Path:
    """The parity record beside the cached graph `path`."""
    return path.with_suffix(".parity.json")


def _record_fields(graph: bytes, runtime_version: str) -> dict[str, Any]:
    """What a parity record binds: the graph bytes' sha256, the onnxruntime version, the
    tolerance and the number of images checked."""
    return {
        "graph_sha256": hashlib.sha256(graph).hexdigest(),
        "onnxruntime": runtime_version,
        "rtol": PARITY_RTOL,
        "images": PARITY_IMAGES,
    }


def recorded_parity(path: Path, fields: dict[str, Any]) -> float | None:
    """The relative difference recorded for the cached graph `path` when its record holds
    `fields` (`_record_fields` of this graph and onnxruntime version) and passed the tolerance;
    None otherwise (no record, unreadable, another graph or runtime)."""
    try:
        with _parity_record(path).open("rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
        if len(data) > MAX_RECORD_BYTES:
            return None
        record = json.loads(data)
        if not isinstance(record, dict):
            return None
        rel_err = float(record["parity_rel_err"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(record.get(key) != value for key, value in fields.items()):
        return None
    return rel_err if rel_err <= PARITY_RTOL else None


def write_parity_record(path: Path, fields: dict[str, Any], rel_err: float) -> None:
    """Record a passed parity check of the cached graph `path` with its `_record_fields`
    (skipped, logged at debug level, when the cache cannot be written)."""
    record = {**fields, "parity_rel_err": rel_err}
    try:
        write_bytes_atomic(_parity_record(path), json.dumps(record).encode())
    except OSError as exc:
        logger.debug("parity record not written (%s)", exc)


#: images per ONNX Runtime call when several threads run the session (`OrtFeatures.workers`).
WORKER_BATCH = 2


class OrtFeatures:
    """Callable: uint8 (B, S, S, 3) numpy -> the module's first output as float32 numpy.

    The session runs on its calling thread (one intra-op thread) and may be called from
    `workers` threads at once: on 2 cores two single-threaded runs of 2 images each gave ~1.3x
    the images/s of one two-thread session on batches of 8 (EfficientNet-Lite0, 224 px; its
    depthwise convolutions split poorly across threads), and image reading runs in the same
    threads (`edgead.models._image_common.map_batches`).

    Attributes:
        parity_rel_err: the measured max |ORT - torch| / max |torch| on the checked batch.
        workers: threads to call it from (torch's thread count).
    """

    def __init__(self, session: Any, input_name: str) -> None:
        self._session = session
        self._input = input_name
        self.parity_rel_err = float("nan")
        self.workers = max(1, torch.get_num_threads())

    @classmethod
    def build(cls, module: nn.Module, first_batch: np.ndarray) -> OrtFeatures | None:
        """An ORT runner of `module` that matches torch on the first `PARITY_IMAGES` images of
        `first_batch`, or None (logged).

        Args:
            module: an eval-mode module taking uint8 (B, S, S, 3) and returning a tuple whose
                first item is the features.
            first_batch: uint8 (B, S, S, 3), the first batch (its first images are checked).
        """
        try:
            import onnxruntime as ort
        except ImportError:
            logger.warning("onnxruntime is not installed: features are extracted with torch")
            return None
        example = torch.from_numpy(np.ascontiguousarray(first_batch))
        cached = cache_dir() / f"{module_fingerprint(module, example)}.onnx"
        session = None
        while session is None:
            try:
                graph = _export_bytes(module, example, cached)
                session = cls._session(ort, graph)
            except Exception as exc:  # noqa: BLE001 - any exporter/ORT failure: use torch
                if _drop_cached(cached):  # a stale cached graph: export once more
                    logger.warning("cached feature graph unusable (%s); exporting again", exc)
                    continue
                logger.warning("ONNX Runtime feature path unavailable (%s); using torch", exc)
                return None
        runner = cls(session, "images")
        fields = _record_fields(graph, ort.__version__)
        recorded = recorded_parity(cached, fields)
        if recorded is not None:
            runner.parity_rel_err = recorded
            logger.info(
                "features through ONNX Runtime (cached graph; parity with torch %.2g relative, "
                "checked when it was cached with onnxruntime %s)",
                recorded,
                ort.__version__,
            )
            return runner
        checked = example[:PARITY_IMAGES]
        with torch.inference_mode():
            reference = module(checked)[0].numpy()
        got = runner(checked.numpy())
        scale = max(float(np.abs(reference).max()), 1e-12)
        runner.parity_rel_err = float(np.abs(got - reference).max()) / scale
        if not runner.parity_rel_err <= PARITY_RTOL:
            _drop_cached(cached)
            logger.warning(
                "ONNX Runtime features differ from torch by %.3g of the largest value "
                "(tolerance %.0e); using torch",
                runner.parity_rel_err,
                PARITY_RTOL,
            )
            return None
        write_parity_record(cached, fields, runner.parity_rel_err)
        logger.info(
            "features through ONNX Runtime (parity with torch: %.2g relative)",
            runner.parity_rel_err,
        )
        return runner

    @staticmethod
    def _session(ort: Any, model: bytes) -> Any:
        """A CPU InferenceSession of the ONNX bytes that runs on its calling thread."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 features of uint8 (B, S, S, 3) images."""
        batch = np.ascontiguousarray(images, dtype=np.uint8)
        return np.asarray(self._session.run(None, {self._input: batch})[0], dtype=np.float32)
