"""`Detector`: load a verified bundle, pick a backend, score frames or rows. Torch-free.

    det = Detector.load("model.edgead", device="auto")
    res = det(frame_bgr)                      # uint8 (H, W, 3) from OpenCV
    res.raw_score, res.score, res.is_anomaly, res.anomaly_map, res.timings_ms

Device selection walks an ordered list of (backend, device) candidates and stops at the first
that initialises; each one that fails is logged with its reason and kept in
`detector.fallbacks` (INFO on device "auto", where skipping an absent accelerator is expected;
WARNING when a device or backend was asked for). The last candidate is always ONNX Runtime
on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.bundle import Bundle, Manifest, read_bundle
from edgead.errors import (
    BackendUnavailableError,
    BundleError,
    ConfigError,
    DataError,
    ReferenceMismatchError,
    unknown_name_error,
)
from edgead.ops.csi import csi_scores
from edgead.ops.image import resize_frame
from edgead.ops.nn_index import FaissIndex, load_index
from edgead.ops.postprocess import normalise_scores, resize_map
from edgead.ops.rows import check_rows
from edgead.ops.rows_nn import score_rows_nn
from edgead.ops.scoring import (
    GRAPH_SCORES,
    IN_GRAPH_DISTANCES,
    ROW_KINDS,
    WINDOW_KINDS,
    PostProcess,
    parse_postprocess,
    score_graph_output,
    score_map_output,
    score_nn_distances,
    score_nn_embeddings,
)
from edgead.ops.tiling import Tiling, merge_tile_scores, tiles_of
from edgead.ops.windows import RingBuffer, window_end_rows
from edgead.runtime.backends.base import Backend, run_batched
from edgead.runtime.reference import (
    ReferenceCheck,
    check_reference,
    has_reference,
    measure_reference,
    reference_errors,
)
from edgead.runtime.series import (
    RowResult,
    SeriesScores,
    check_windows,
    window_shape,
)

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "gpu", "npu")
BACKEND_ALIASES = {
    "onnxruntime": "onnxruntime",
    "ort": "onnxruntime",
    "openvino": "openvino",
    "ov": "openvino",
    "tensorrt": "tensorrt",
    "trt": "tensorrt",
}


@dataclass
class Result:
    """The verdict on one frame.

    Attributes:
        raw_score: detector units, higher = more anomalous.
        score: normalised to [0, 1] with the threshold at 0.5 (NaN when the bundle is uncalibrated).
        is_anomaly: raw_score >= threshold (None when the bundle has no threshold).
        anomaly_map: float32 (H, W) at the frame's resolution, raw units; None without a map.
        timings_ms: per-stage wall time of the batch this frame was in: preprocess, graph,
            search (nearest-neighbour), postprocess.
    """

    raw_score: float
    score: float
    is_anomaly: bool | None
    anomaly_map: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class RowScores:
    """Scores for tabular rows: raw_scores float32 (N,), scores float32 (N,) in [0, 1],
    is_anomaly bool (N,) (all False with a warning when uncalibrated)."""

    raw_scores: np.ndarray
    scores: np.ndarray
    is_anomaly: np.ndarray


BackendFactory = Callable[[Bundle, str, "int | None"], Backend]


def _make_ort(bundle: Bundle, device: str, threads: int | None) -> Backend:
    from edgead.runtime.backends.ort import OrtBackend
    from edgead.runtime.backends.tensorrt import engine_cache_dir

    m = bundle.manifest
    trt_precision = m.build.get("tensorrt", {}).get("precision", m.precision)
    return OrtBackend(
        bundle.member(m.graphs["onnx"]),
        device=device,
        threads=threads,
        fp16=trt_precision == "fp16",
        cache_dir=engine_cache_dir(bundle.path) / "ort-trt",
    )


def _make_openvino(bundle: Bundle, device: str, threads: int | None) -> Backend:
    from edgead.runtime.backends.openvino import OpenVinoBackend

    m = bundle.manifest
    if "openvino" not in m.graphs:
        raise BackendUnavailableError(
            "this bundle has no OpenVINO IR; export it with --target openvino"
        )
    xml = m.graphs["openvino"]
    weights = xml[: -len(".xml")] + ".bin"
    return OpenVinoBackend(
        bundle.member(xml),
        bundle.member(weights),
        device=device,
        precision=m.precision,
        threads=threads,
    )


def _make_tensorrt(bundle: Bundle, device: str, threads: int | None) -> Backend:
    from edgead.runtime.backends.tensorrt import TensorRtBackend, build_checked_engine

    settings_precision = bundle.manifest.build.get("tensorrt", {}).get(
        "precision", bundle.manifest.precision
    )
    engine, _, _ = build_checked_engine(bundle)  # a new engine is checked before it is cached
    return TensorRtBackend(engine, precision=str(settings_precision))


#: backend name -> factory(bundle, device, threads). Tests may swap entries (monkeypatch.setitem).
BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "onnxruntime": _make_ort,
    "openvino": _make_openvino,
    "tensorrt": _make_tensorrt,
}


def backend_candidates(
    manifest: Manifest, device: str, backend: str | None
) -> list[tuple[str, str]]:
    """Ordered (backend, backend device) pairs to try for `device`; ONNX Runtime CPU comes last.

    Args:
        manifest: the bundle's manifest (which graphs and build settings it carries).
        device: "auto" | "cpu" | "cuda" | "gpu" | "npu".
        backend: None (any), "onnxruntime", "openvino" or "tensorrt".
    """
    has_ir = "openvino" in manifest.graphs
    is_trt = manifest.target == "tensorrt" or "tensorrt" in manifest.build
    table: dict[str, list[tuple[str, str]]] = {
        "auto": [("tensorrt", "cuda")] * is_trt
        + [("onnxruntime", "tensorrt")] * is_trt
        + [("onnxruntime", "cuda")]
        + [("openvino", "GPU"), ("openvino", "CPU")] * has_ir,
        "cpu": [("openvino", "CPU")] * has_ir,
        "cuda": [("tensorrt", "cuda")] * is_trt
        + [("onnxruntime", "tensorrt")] * is_trt
        + [("onnxruntime", "cuda")],
        "gpu": [("openvino", "GPU")] * has_ir + [("onnxruntime", "cuda")],
        "npu": [("openvino", "NPU")] * has_ir,
    }
    candidates = table[device]
    if backend is not None:
        candidates = [c for c in candidates if c[0] == backend]
        if not candidates and backend != "onnxruntime":  # e.g. openvino on "cuda": try it, then CPU
            candidates = [(backend, {"openvino": "CPU", "tensorrt": "cuda"}[backend])]
    ordered: list[tuple[str, str]] = []
    for candidate in [*candidates, ("onnxruntime", "cpu")]:
        if candidate not in ordered:
            ordered.append(candidate)
    return ordered


class Detector:
    """A loaded bundle bound to one backend. Build with `Detector.load`.

    Attributes:
        manifest: the verified bundle manifest.
        backend: name of what is used, e.g. "onnxruntime/CPUExecutionProvider", "openvino/CPU".
        fallbacks: "wanted X: reason" for each candidate that failed before `backend`.
    """

    def __init__(self, bundle: Bundle, backend: Backend, fallbacks: Sequence[str] = ()) -> None:
        self._bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self._backend: Backend | None = backend
        self.fallbacks: list[str] = list(fallbacks)
        self.reference_check: ReferenceCheck | None = None  # set by load() when it verified
        self._post: PostProcess = parse_postprocess(self.manifest.postprocess)
        kind = self._post.kind
        self._buffers: dict[str, RingBuffer] = {}  # window bundles: one ring buffer per stream
        self._kind: str = kind
        self._gray_warned = False
        self._tiling: Tiling | None = None
        if self.manifest.postprocess.get("tiling") is not None:
            try:
                self._tiling = Tiling.from_dict(self.manifest.postprocess["tiling"]).validate()
            except ConfigError as exc:
                raise BundleError(f"bundle tiling is invalid: {exc}") from exc
        self._index: FaissIndex | None = None
        self._bank: np.ndarray | None = None  # reconstructed bank vectors (reweight only)
        #: exact search inside the graph (`--index graph`): distances come out of the graph
        self._in_graph_search = kind == "nn_index" and self._post.raw.get("search") == "graph"
        if self._in_graph_search:
            if self._post.score not in GRAPH_SCORES:
                raise BundleError(
                    f"in-graph search with score {self._post.score!r} is not supported "
                    f"({', '.join(GRAPH_SCORES)}); re-export with --index flat"
                )
        elif kind.endswith("nn_index"):
            spec = self.manifest.index
            if spec is None:
                raise BundleError(
                    f"post-processing {kind!r} needs an index, but the manifest has none"
                )
            _prefer_blas_search()
            rerank_bank = bundle.array(spec.rerank_array) if spec.rerank_array else None
            graph_dims = [o.shape[-1] for o in self.manifest.outputs if o.name == "embedding"]
            self._index = load_index(
                bundle.member(spec.file),
                spec,
                embedding_dim=graph_dims[0] if graph_dims else None,
                rerank_bank=rerank_bank,
            )
        # kNN/LOF training-row statistics, decoded once (.npy, no pickle).
        self._row_arrays: dict[str, np.ndarray] = (
            {name: bundle.array(name) for name in self.manifest.arrays}
            if kind == "rows_nn_index"
            else {}
        )
        norm = self.manifest.normalisation
        self._calibrated = self.manifest.threshold is not None and all(
            k in norm for k in ("min", "max", "threshold")
        )
        if not self._calibrated:
            logger.warning(
                "bundle %s has no threshold/normalisation: score is NaN and is_anomaly None",
                bundle.path,
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "auto",
        backend: str | None = None,
        threads: int | None = None,
        verify: bool | None = None,
        *,
        threshold: float | None = None,
        sensitivity: float | None = None,
        modality: str | None = None,
        trusted_keys: Sequence[Any] | None = None,
    ) -> Detector:
        """Verify the bundle at `path` and bind it to the best backend available for `device`.

        Args:
            path: a `.edgead` bundle.
            device: "auto" (best available), "cpu", "cuda", "gpu" (OpenVINO GPU / CUDA), "npu".
            backend: None (any), "onnxruntime", "openvino" or "tensorrt" (aliases ort/ov/trt).
            threads: intra-op CPU threads for the graph and the nearest-neighbour search
                (faiss's OpenMP pool is process-wide); None keeps the libraries' defaults.
            verify: run each backend on the bundle's reference inputs and refuse it (logged,
                recorded in `fallbacks`, next candidate tried) when its outputs differ beyond
                the manifest's tolerance. None (default): on for TensorRT (native engine or
                ONNX Runtime's TensorRT provider), off elsewhere. The result is kept in
                `detector.reference_check`.

            threshold: decision threshold in raw-score units instead of the bundle's (the
                normalised score keeps 0.5 at the threshold in use).
            sensitivity: 0..1 instead of a raw threshold: 0.5 keeps the bundle's threshold,
                higher flags more (see `edgead.runtime.threshold.override_threshold`).
            modality: "image" or "tabular": refuse a bundle of the other kind before any
                backend is loaded.
            trusted_keys: Ed25519 public keys (or paths to their PEM files, see
                `edgead.signing`); when given, the bundle must be signed by one of them
                (checked before anything in it is parsed). None: signatures are not checked.

        Raises:
            BundleError: the bundle fails verification (or its signature, with trusted_keys),
                or verify=True on a bundle without reference outputs.
            ConfigError: the bundle's modality is not `modality`; a bad threshold override.
            ReferenceMismatchError: every backend that loaded failed the reference check.
            BackendUnavailableError: not even ONNX Runtime on the CPU could load the graph.
        """
        from edgead.runtime.threshold import check_modality, override_threshold

        device = device.lower()
        if device not in DEVICES:
            raise unknown_name_error("device", device, DEVICES)
        if backend is not None:
            if backend.lower() not in BACKEND_ALIASES:
                raise unknown_name_error("backend", backend, BACKEND_ALIASES)
            backend = BACKEND_ALIASES[backend.lower()]
        bundle = read_bundle(path, trusted_keys=trusted_keys)
        check_modality(bundle.manifest, modality, path)
        if threshold is not None or sensitivity is not None:
            manifest = override_threshold(bundle.manifest, threshold, sensitivity)
            bundle = dataclasses.replace(bundle, manifest=manifest)
        if threads is not None:
            _set_search_threads(int(threads))
        fallbacks: list[str] = []
        last_error: BackendUnavailableError | None = None
        if verify and not has_reference(bundle.manifest):
            raise BundleError(
                f"verify=True, but bundle {path} carries no reference outputs (exported by an "
                "older edgead); re-export it, or load it with verify=False"
            )
        # On "auto", walking past an absent accelerator is expected: INFO, not WARNING.
        level = logging.INFO if device == "auto" and backend is None else logging.WARNING
        for name, dev in backend_candidates(bundle.manifest, device, backend):
            try:
                engine = BACKEND_FACTORIES[name](bundle, dev, threads)
                check = _verify_backend(bundle, engine, verify)
            except BackendUnavailableError as exc:
                reason = f"wanted {name}/{dev}: {exc}"
                logger.log(level, "backend fallback: %s", reason)
                fallbacks.append(reason)
                last_error = exc
                continue
            if fallbacks:
                logger.log(level, "using %s after %d fallback(s)", engine.name, len(fallbacks))
            detector = cls(bundle, engine, fallbacks)
            detector.reference_check = check
            return detector
        error = (
            ReferenceMismatchError
            if isinstance(last_error, ReferenceMismatchError)
            else BackendUnavailableError
        )
        raise error(f"no backend could load {path}: {'; '.join(fallbacks)}") from last_error

    def check_reference(self) -> ReferenceCheck:
        """Run the backend in use on the bundle's reference inputs; the errors, not raised.

        Raises:
            BundleError: the bundle carries no reference outputs.
        """
        return measure_reference(self._bundle, self._engine())

    def reference_errors(self) -> dict[str, dict[str, float]]:
        """{output name: {"max_abs_err", "max_rel_err"}} of the backend in use on the bundle's
        reference inputs, with no tolerance applied (the exporter sets int8 tolerances from it).

        Raises:
            BundleError: the bundle carries no reference outputs.
        """
        return reference_errors(self._bundle, self._engine())[0]

    @property
    def backend(self) -> str:
        """Name of the backend in use, e.g. 'onnxruntime/CPUExecutionProvider'."""
        return self._engine().name

    @property
    def backend_info(self) -> dict[str, object]:
        """Facts the backend reports (providers used, precision hint, threads)."""
        return dict(self._engine().info)

    def _engine(self) -> Backend:
        if self._backend is None:
            raise BackendUnavailableError("detector was closed; load it again")
        return self._backend

    def close(self) -> None:
        """Release the backend."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ images
    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) px the graph takes."""
        size = self.manifest.input.image_size
        if size is None:
            raise DataError("this bundle scores tabular rows; use score_rows()")
        return int(size[0]), int(size[1])

    def __call__(
        self,
        frame: np.ndarray | Sequence[np.ndarray],
        channel_order: str = "BGR",
        maps: bool = True,
    ) -> Result | list[Result]:
        """Score one frame (-> Result) or a list of frames (-> list of Results).

        Args:
            frame: uint8 (H, W, 3) (also (H, W) gray or (H, W, 4)), any H, W; or a list of them.
                A 4-D uint8 array (B, H, W, 3) is treated as a batch.
            channel_order: "BGR" (OpenCV's cv2.imread, the default) or "RGB".
            maps: False skips the anomaly map (upsample, blur, resize to the frame) where the
                score does not need it, for stations that only need the decision;
                `Result.anomaly_map` is then None. Scores and decisions are the same.

        Raises:
            DataError: not uint8, wrong number of dimensions or channels, or a tabular bundle.
        """
        if self._kind in ROW_KINDS + WINDOW_KINDS:
            raise DataError(
                "this bundle scores rows; call detector.score_rows(rows)"
                if self._kind in ROW_KINDS
                else "this bundle scores sensor windows; call detector.push(row) or "
                "detector.score_series(rows)"
            )
        if not isinstance(frame, (np.ndarray, list, tuple)):
            raise DataError(
                f"expected a uint8 image array or a list of them, got {type(frame).__name__}"
            )
        single = isinstance(frame, np.ndarray) and frame.ndim in (2, 3)
        frames: list[np.ndarray] = [frame] if single else list(frame)  # type: ignore[list-item]
        if not frames:
            return []
        results = self._score_frames(frames, channel_order, maps)
        return results[0] if single else results

    def _score_frames(
        self, frames: list[np.ndarray], channel_order: str, want_maps: bool = True
    ) -> list[Result]:
        t0 = time.perf_counter()
        self._warn_on_gray(frames)
        resize = self.manifest.input.resize
        tiling = self._tiling
        if tiling is None:
            batch = np.stack(
                [resize_frame(f, self.image_size, resize, channel_order) for f in frames]
            )
        else:  # every frame at the tiling's frame size, cut into tiles: one batch of tiles
            resized = [resize_frame(f, tiling.frame_hw, resize, channel_order) for f in frames]
            batch = tiles_of(resized, tiling)
        t1 = time.perf_counter()
        outputs = self.run_graph(batch)
        _check_output_sizes(outputs, self._kind, len(batch), self.manifest.postprocess)
        t2 = time.perf_counter()
        raw, maps, search_ms = self._image_scores(
            outputs, len(batch), want_maps or tiling is not None
        )
        if tiling is not None:  # image score = max over tiles, maps stitched at (H, W)
            raw, maps = merge_tile_scores(raw, maps, len(frames), tiling)  # type: ignore[assignment]
        t3 = time.perf_counter()
        normalised, decisions = self._decide(raw)
        full_maps = [
            None if maps is None or not want_maps else resize_map(maps[i], f.shape[:2])
            for i, f in enumerate(frames)
        ]
        t4 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "graph": (t2 - t1) * 1e3,
            "search": search_ms,
            "postprocess": (t3 - t2) * 1e3 - search_ms + (t4 - t3) * 1e3,
        }
        return [
            Result(
                raw_score=float(raw[i]),
                score=float(normalised[i]),
                is_anomaly=None if decisions is None else bool(decisions[i]),
                anomaly_map=full_maps[i],
                timings_ms=dict(timings),
            )
            for i in range(len(frames))
        ]

    def _warn_on_gray(self, frames: list[np.ndarray]) -> None:
        """Log once per Detector when a colour-trained bundle is given gray frames."""
        if self._gray_warned or self.manifest.input.trained_channels != "color":
            return
        if any(f.ndim == 2 or (f.ndim == 3 and f.shape[2] == 1) for f in frames):
            self._gray_warned = True
            logger.warning(
                "bundle %s was trained on colour images but is given gray frames; they are "
                "replicated to 3 channels and may score as anomalous. Feed colour frames or "
                "train on gray images",
                self._bundle.path,
            )

    def run_graph(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs {output name: array} of `batch`, in chunks of the backend's max_batch.

        `batch` is already in the graph's input form (images: uint8 (B, H, W, 3) RGB at the
        bundle's image_size; rows: float32 (B, D); windows: float32 (B, L, D)): no decoding,
        resizing or post-processing. The exporter's parity check compares these with torch.

        Raises:
            BackendRuntimeError: the backend failed on the batch (the message names the input).
        """
        spec = self.manifest.input
        return run_batched(
            self._engine(),
            batch,
            tuple(o.name for o in self.manifest.outputs),
            input_name=f"{spec.name!r} (declared {spec.dtype} {spec.shape})",
        )

    def _image_scores(
        self, outputs: dict[str, np.ndarray], n: int, want_maps: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(raw scores (B,), maps (B, S, S) at input size or None, search time ms), from the
        one scorer of the bundle's post-processing kind (`edgead.ops.scoring`).

        With `want_maps` False the map is only made when the score needs it ("map_max", "map").
        """
        post = self._post
        if post.kind == "nn_index" and self._in_graph_search:
            scored = score_nn_distances(
                outputs[IN_GRAPH_DISTANCES], post, self.image_size, want_maps
            )
        elif post.kind == "nn_index":
            if self._index is None:
                raise BundleError("bundle has no nearest-neighbour index")
            if post.score == "reweight" and self._bank is None:
                # the fp16 re-rank copy if shipped, else the index's own vectors; builds IVF's
                # direct map (a bare reconstruct_n fails on IVF indexes)
                try:
                    self._bank = self._index.reconstruct_all()
                except RuntimeError as exc:  # faiss: this index type cannot decode its vectors
                    raise BundleError(
                        "score 'reweight' needs the bank vectors, but the bundle's index cannot "
                        f"reconstruct them ({str(exc).splitlines()[0][:200]}); re-export it"
                    ) from exc
            scored = score_nn_embeddings(
                outputs["embedding"], self._index, post, self.image_size, self._bank, want_maps
            )
        elif post.kind == "csi_nn_index":
            if self._index is None:
                raise BundleError("bundle has no nearest-neighbour index")
            t0 = time.perf_counter()
            raw = csi_scores(self._index, outputs["embedding"], outputs["norm"], post.raw)
            return raw, None, (time.perf_counter() - t0) * 1e3
        elif post.kind == "map":
            scored = score_map_output(outputs["anomaly_map"], post, self.image_size)
        else:
            scored = score_graph_output(
                outputs["score"], outputs.get("anomaly_map"), post, self.image_size, want_maps
            )
        return scored.raw, scored.maps, scored.search_ms

    def _decide(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(normalised scores float32, decisions bool or None when uncalibrated)."""
        if not self._calibrated:
            return np.full(raw.shape, np.nan, dtype=np.float32), None
        normalised = normalise_scores(raw, self.manifest.normalisation)
        return normalised, raw >= float(self.manifest.threshold)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ rows
    def score_rows(self, rows: np.ndarray) -> RowScores:
        """Scores for tabular rows.

        Args:
            rows: (N, D) real numbers (converted to float32), D = the bundle's feature count,
                no NaN/inf.

        Raises:
            DataError: an image bundle, wrong or ragged shape, non-numeric or non-finite values.
        """
        if self._kind in WINDOW_KINDS:
            raise DataError(
                "this bundle scores windows of rows; call detector.score_series(rows) or "
                "detector.push(row)"
            )
        if self._kind not in ROW_KINDS:
            raise DataError("this bundle scores images; call detector(frame)")
        rows = check_rows(rows, self.manifest.input.shape[-1], one_row_ok=True)
        outputs = self.run_graph(rows)
        n = len(rows)
        _check_output_sizes(outputs, self._kind, n, self.manifest.postprocess)
        if self._kind == "rows":
            raw = outputs["score"].reshape(n).astype(np.float32)
        else:
            if self._index is None:
                raise BundleError("bundle has no nearest-neighbour index")
            raw = score_rows_nn(
                self._index,
                outputs["embedding"].reshape(n, -1),
                self.manifest.postprocess,
                self._row_arrays,
            ).astype(np.float32)
        normalised, decisions = self._decide(raw)
        if decisions is None:
            decisions = np.zeros(n, dtype=bool)
        return RowScores(raw_scores=raw, scores=normalised, is_anomaly=decisions)

    # ------------------------------------------------------------------ windows
    @property
    def window(self) -> tuple[int, int, int]:
        """(rows per window L, stride, features D) of a window bundle."""
        if self._kind not in WINDOW_KINDS:
            raise DataError("this bundle does not score windows of rows")
        return window_shape(self.manifest.postprocess, self.manifest.input.shape)

    def score_windows(self, windows: np.ndarray) -> RowScores:
        """Scores of raw windows float32 (B, L, D) (one (L, D) window is a batch of 1).

        Raises:
            DataError: not a window bundle, wrong shape, non-numeric or non-finite values.
        """
        length, _, n_features = self.window
        batch = check_windows(windows, length, n_features)
        raw = self.run_graph(batch)["score"].reshape(len(batch)).astype(np.float32)
        normalised, decisions = self._decide(raw)
        if decisions is None:
            decisions = np.zeros(len(raw), dtype=bool)
        return RowScores(raw_scores=raw, scores=normalised, is_anomaly=decisions)

    def score_series(self, rows: np.ndarray, batch: int = 256) -> SeriesScores:
        """Scores of the sliding windows of a recording (N, D) in time order.

        The window ending at row t covers rows t-L+1..t; scores exist for rows
        `window_end_rows(N, L, stride)` (the first L-1 rows get none).
        """
        from edgead.ops.windows import sliding_windows

        length, stride, n_features = self.window
        array = check_rows(rows, n_features)
        ends = window_end_rows(len(array), length, stride)
        if not len(ends):
            raise DataError(f"{len(array)} rows are fewer than one window of {length} rows")
        windows = sliding_windows(array, length, stride)
        parts = [self.score_windows(windows[i : i + batch]) for i in range(0, len(windows), batch)]
        return SeriesScores(
            rows=ends,
            raw_scores=np.concatenate([p.raw_scores for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            is_anomaly=np.concatenate([p.is_anomaly for p in parts]),
        )

    def push(self, row: np.ndarray, stream: str = "default") -> RowResult | None:
        """Add one row (D,) to `stream`'s ring buffer; a RowResult when a window is due.

        Each stream (e.g. one machine) keeps its own last L rows; the first result comes with
        row L-1, then one every `stride` rows, equal to `score_series` on the same rows.
        """
        length, stride, n_features = self.window
        buffer = self._buffers.get(stream)
        if buffer is None:
            buffer = self._buffers[stream] = RingBuffer(length, n_features, stride)
        window = buffer.push(row)
        if window is None:
            return None
        res = self.score_windows(window[None])
        return RowResult(
            stream=stream,
            row_index=buffer.n_seen - 1,
            raw_score=float(res.raw_scores[0]),
            score=float(res.scores[0]),
            is_anomaly=bool(res.is_anomaly[0]) if self._calibrated else None,
        )

    def reset_stream(self, stream: str = "default") -> None:
        """Forget `stream`'s rows (after a gap in the data); the next window starts afresh."""
        self._buffers.pop(stream, None)


def _check_output_sizes(
    outputs: dict[str, np.ndarray], kind: str, n: int, post: dict[str, Any]
) -> None:
    """BundleError when a graph output cannot hold what the manifest's post-processing reads
    for a batch of `n` (a graph that does not match its manifest, e.g. another grid)."""

    def bad(name: str, expected: str) -> BundleError:
        return BundleError(
            f"graph output {name!r} has shape {outputs[name].shape} for {n} input(s); the "
            f"manifest's {kind!r} post-processing needs {expected}; the graph member does not "
            "match its manifest, re-export the bundle"
        )

    for name in ("embedding", IN_GRAPH_DISTANCES, "score", "anomaly_map"):
        if name in outputs and (outputs[name].ndim == 0 or outputs[name].shape[0] != n):
            raise bad(name, f"a leading batch axis of {n}")
    if kind in ("nn_index", "rows_nn_index"):
        per_item = int(post["grid"][0]) * int(post["grid"][1]) if kind == "nn_index" else 1
        # in-graph search (`--index graph`) outputs the patch distances instead of embeddings
        name = IN_GRAPH_DISTANCES if IN_GRAPH_DISTANCES in outputs else "embedding"
        size = outputs[name].size
        if size == 0 or size % (n * per_item):
            raise bad(name, f"{n} x {per_item} x D values")
    if kind in ("graph", "rows") and outputs["score"].size != n:
        raise bad("score", f"{n} values")
    if kind in ("map", "graph") and "anomaly_map" in outputs:
        amap = outputs["anomaly_map"]
        if amap.ndim < 3 or amap.size != n * amap.shape[-1] * amap.shape[-2]:
            raise bad("anomaly_map", "(N, H, W) or (N, 1, H, W)")


def _verify_backend(bundle: Bundle, engine: Backend, verify: bool | None) -> ReferenceCheck | None:
    """The reference check of a freshly built backend (closed when it fails), or None when skipped.

    verify None checks TensorRT (native engine or ONNX Runtime's TensorRT provider) when the
    bundle has reference outputs, and logs that it cannot when it has none.
    """
    is_trt = engine.name.lower().startswith("tensorrt/") or engine.name.endswith(
        "TensorrtExecutionProvider"
    )
    if verify is False or (verify is None and not is_trt):
        return None
    if not has_reference(bundle.manifest):
        logger.warning(
            "%s is not checked: bundle %s carries no reference outputs; re-export it",
            engine.name,
            bundle.path,
        )
        return None
    try:
        return check_reference(bundle, engine)
    except BackendUnavailableError:
        engine.close()
        raise


#: faiss computes exact L2 with BLAS (one sgemm) only when n_queries * dim reaches this; below it
#: faiss uses per-pair SIMD loops, about 3x slower for PatchCore-sized searches (784 x 152-d
#: queries against ~4000 vectors on this CPU). Same neighbours either way (distances agree to
#: ~1e-6 relative).
_BLAS_THRESHOLD = 20


def _prefer_blas_search() -> None:
    """Let faiss use its BLAS path for every search of >= 20 queries (a process-wide setting)."""
    import faiss

    if int(faiss.cvar.distance_compute_blas_threshold) > _BLAS_THRESHOLD:
        logger.debug(
            "faiss distance_compute_blas_threshold %d -> %d",
            faiss.cvar.distance_compute_blas_threshold,
            _BLAS_THRESHOLD,
        )
        faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD


def _set_search_threads(threads: int) -> None:
    """Limit faiss's OpenMP pool (process-wide) to `threads`."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a core dependency
        return
    faiss.omp_set_num_threads(threads)
