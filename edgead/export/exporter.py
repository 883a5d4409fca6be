"""One generic exporter: any registered detector's ExportSpec -> a verified `.edgead` bundle.

`export_detector` validates the options into a frozen `ExportConfig`, then `run_export` drives
the pipeline, one short function per step:

1. graphs (`_step_graphs`): trace the spec's module to ONNX (checked); OpenVINO IR when asked.
2. index (`_step_index`): the nearest-neighbour index when the post-processing needs one
   (`edgead.export.index.build_index`: compressed DEFAULT_INDEX for image "nn_index", exact
   "flat" for "rows_nn_index", measured on the run's labelled test images against exact
   search, within --max-auroc-drop).
3. manifest (`_step_manifest`): torch reference outputs of the parity inputs, the manifest.
4. parity (`_step_parity`): a candidate bundle with the EXACT index; graph outputs of every
   backend the target uses vs torch, then per-item scores through the real runtime
   (`edgead.runtime.Detector`) vs `detector.score`.
5. calibration (`_step_calibration`): when the index is compressed (or bf16 / int8 was asked),
   swap it in and re-fit the threshold / normalisation through it (`edgead.calibrate`).
6. measurement (`_step_measurement`): metrics through the runtime on the run's test data.
7. write (`_step_write`): the final bundle, written atomically, only if every step passed.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead import __version__
from edgead.bundle import SCHEMA_VERSION, IndexSpec, InputSpec, Manifest, OutputSpec, write_bundle
from edgead.calibrate import refit_through_bundle, runtime_raw_scores, runtime_scores_of
from edgead.errors import ConfigError, ExportError
from edgead.export.graph_index import graph_index_report, in_graph_spec
from edgead.export.graphs import OPSET, export_onnx, export_openvino_ir, run_torch
from edgead.export.index import (
    DEFAULT_INDEX,
    INDEX_FILE,
    IndexBuild,
    IndexOptions,
    IndexValidation,
    build_index,
    validation_from_images,
)
from edgead.export.parity import check_graph_parity, check_score_parity
from edgead.export.precision import (
    CONTROLLED,
    INT8_OPENVINO,
    INT8_SCOPES,
    check_precision,
    int8_members,
    measure_change,
    nncf_validator,
    over_budget,
    reference_error,
    runtime_aurocs,
)
from edgead.models.base import BaseDetector, ExportSpec
from edgead.ops.progress import Progress, no_progress
from edgead.runrecord import RunSplit
from edgead.runtime.reference import (
    MEASURED_TOLERANCE_MARGIN,
    pick_reference,
    reference_members,
)

logger = logging.getLogger(__name__)

TARGETS = ("onnx", "openvino", "tensorrt")
#: other spellings of a target ("engine" is ultralytics' name for a TensorRT export)
TARGET_ALIASES = {"engine": "tensorrt", "trt": "tensorrt", "ov": "openvino"}
#: TensorRT engine build settings recorded in manifest.build["tensorrt"] (built on the device).
TENSORRT_BUILD = {"workspace_mib": 1024, "max_batch": 8}

#: evaluate(bundle_path, backend) -> metrics dict (the eval JSON keys); backend None = default.
Evaluator = Callable[[Path, "str | None"], dict[str, Any]]
#: Default --index per post-processing kind: PatchCore ships a compressed bank; kNN/LOF keep
#: exact search (their scores must match the fitted model exactly) unless --index is given.
DEFAULT_INDEX_BY_KIND = {"nn_index": DEFAULT_INDEX, "rows_nn_index": "flat", "csi_nn_index": "flat"}


@dataclass
class ExportData:
    """The run's data the exporter measures with (all optional).

    test_inputs: labelled test inputs: uint8 (S, S, 3) images (a sequence) or float32 (N, D) rows;
        image nn-index detectors measure the index's AUROC change on them.
    test_labels: int (N,) 0 = normal, 1 = anomalous, aligned with test_inputs.
    test_masks: bool (S, S) ground-truth masks per test image (a sequence), or None.
    normal_val: the run's held-out normal validation inputs (uint8 (N, S, S, 3) or float32
        (N, D)), or a zero-argument callable that loads them (None when they cannot be
        reproduced); a compressed index re-fits the threshold on them.
    train_inputs: the run's training inputs (a sequence, loaded per item), or None; int8
        calibrates on them when the run held nothing out (cross-fitted threshold).
    """

    test_inputs: Any = None
    test_labels: np.ndarray | None = None
    test_masks: Any = None
    normal_val: Any = None
    train_inputs: Any = None

    def calibration_inputs(self, limit: int = 64) -> np.ndarray | None:
        """Normal inputs to calibrate int8 on: the held-out ones, else up to `limit` training
        inputs spread over the set (logged), else None."""
        held_out = self.normal_inputs()
        if held_out is not None and len(held_out):
            return held_out
        if self.train_inputs is None or not len(self.train_inputs):
            return None
        picks = np.unique(np.linspace(0, len(self.train_inputs) - 1, limit).astype(int))
        logger.info("int8 calibrates on %d training inputs (none held out)", len(picks))
        return np.stack([np.asarray(self.train_inputs[int(i)]) for i in picks])

    def normal_inputs(self) -> np.ndarray | None:
        """The held-out normal validation inputs (loaded on first use), or None."""
        if callable(self.normal_val):
            self.normal_val = self.normal_val()
        return None if self.normal_val is None else np.asarray(self.normal_val)


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ExportError(f"unknown {kind} {value!r}; use one of {', '.join(allowed)}")


def _input_spec(detector: BaseDetector, spec: ExportSpec, meta: dict[str, Any]) -> InputSpec:
    example = spec.example_input
    batch: int | None = None if spec.dynamic_batch else int(example.shape[0])
    if detector.modality == "image":
        declared = detector.input_preprocess()
        if declared is None:
            raise ExportError(f"{detector.name}: an image detector must declare its preprocessing")
        channels = declared.channels
        if example.dtype != np.uint8 or example.ndim != 4 or example.shape[3] != channels:
            raise ExportError(
                f"{detector.name}: image export needs a uint8 (B, S, S, {channels}) example "
                f"input (its declared preprocessing); got {example.dtype} {example.shape}"
            )
        size = (int(example.shape[1]), int(example.shape[2]))
        return InputSpec(
            name=spec.input_name,
            dtype="uint8",
            shape=(batch, *size, declared.channels),
            layout=declared.layout,
            channel_order=declared.channel_order,
            image_size=size,
            # the resize the run was trained with; runs from before it was recorded used "area"
            resize=str((meta.get("data") or {}).get("interpolation", "area")),
            mean=tuple(round(v, 6) for v in declared.mean),
            std=tuple(round(v, 6) for v in declared.std),
            trained_channels=(meta.get("data") or {}).get("channels"),
        )
    is_series = detector.modality == "timeseries"
    if example.ndim != (3 if is_series else 2):
        raise ExportError(
            f"{detector.name}: {detector.modality} export needs a float32 "
            f"{'(B, L, D)' if is_series else '(B, D)'} example input; got shape {example.shape}"
        )
    names = getattr(detector, "feature_names_", None) or (meta.get("data") or {}).get(
        "feature_names"
    )
    return InputSpec(
        name=spec.input_name,
        dtype="float32",
        shape=(batch, *(int(v) for v in example.shape[1:])),
        layout="NTC" if is_series else "NC",
        channel_order="",
        resize="",
        feature_names=tuple(names) if names else None,
    )


def _normal_inputs(data: ExportData | None) -> Callable[[], np.ndarray | None]:
    """A loader of the run's held-out normal validation inputs (None when there are none)."""
    return (lambda: None) if data is None else data.normal_inputs


def _reference_inputs(
    detector: BaseDetector, spec: ExportSpec, parity_inputs: np.ndarray | None, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Inputs for the parity check and where they came from."""
    if parity_inputs is not None and len(parity_inputs):
        dtype = np.uint8 if detector.modality == "image" else np.float32
        return np.ascontiguousarray(parity_inputs, dtype=dtype), "run data"
    rng = np.random.default_rng(seed)
    example = spec.example_input
    logger.warning(
        "no training/test data given for the parity check; using the trace example "
        "and random inputs (weaker than real images)"
    )
    if detector.modality == "image":
        noise = rng.integers(0, 256, size=(3, *example.shape[1:]), dtype=np.uint8)
    else:
        noise = (example[:1] + rng.normal(size=(3, *example.shape[1:]))).astype(np.float32)
    return np.concatenate([example[:1], noise]).astype(example.dtype), "synthetic"


@dataclass(frozen=True)
class ExportConfig:
    """What an export makes, validated before any graph is traced.

    target: "onnx", "openvino" or "tensorrt" (aliases in TARGET_ALIASES are accepted and
        stored under their canonical name).
    precision: "fp32", "fp16", "bf16", "int8" or "auto" (see `edgead.export.precision`).
    device_profile: name of the device profile the export is meant for (recorded).
    index: `edgead.export.index.IndexOptions` fields as a dict (nn-index detectors only);
        None uses DEFAULT_INDEX_BY_KIND.
    threads: threads the `auto` timings run with (None: the libraries' defaults; else >= 1).
    choose_by_timing: with precision "auto" or index "auto", export every candidate and keep
        the fastest here (`edgead.export.auto`).

    Raises:
        ExportError: unknown target or precision, a precision the target cannot run, or a
            thread count below 1.
    """

    target: str = "onnx"
    precision: str = "fp32"
    device_profile: str | None = None
    index: dict[str, Any] | None = None
    threads: int | None = None
    choose_by_timing: bool = True

    def __post_init__(self) -> None:
        target = TARGET_ALIASES.get(self.target, self.target)
        _check_choice("target", target, TARGETS)
        object.__setattr__(self, "target", target)
        if self.precision != "auto":
            check_precision(target, self.precision)
        if self.index is not None:
            object.__setattr__(self, "index", dict(self.index))
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ExportError(
                f"threads must be a whole number >= 1 (or None), got {self.threads!r}"
            )

    def check_detector(self, detector: BaseDetector) -> None:
        """ExportError when this export cannot be made of `detector` (tabular on TensorRT)."""
        if self.target == "tensorrt" and detector.modality == "tabular":
            raise ExportError(
                f"--target tensorrt: {detector.name} scores tabular rows with a graph of a few "
                "small operations (scale-and-shift, small matrix products) that TensorRT cannot "
                "speed up: copying each batch to the GPU costs more than the graph itself. "
                "Export with --target onnx (ONNX Runtime on the CPU)"
            )


@dataclass
class _Build:
    """What the export steps build up for one bundle (see `run_export`)."""

    detector: BaseDetector
    meta: dict[str, Any]
    config: ExportConfig
    data: ExportData | None
    spec: ExportSpec
    kind: str
    index: dict[str, Any] | None  # the index options in effect (tiled runs force "flat")
    graph_search: bool
    graph_bank: np.ndarray | None = None  # the bank searched inside the graph (--index graph)
    timings: dict[str, float] = field(default_factory=dict)
    members: dict[str, bytes] = field(default_factory=dict)
    graphs: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    array_members: dict[str, str] = field(default_factory=dict)
    index_build: IndexBuild | None = None
    index_report: dict[str, Any] | None = None
    exact_index: tuple[bytes, IndexSpec] | None = None  # for parity when the index is compressed
    inputs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inputs_source: str = ""
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    manifest: Manifest | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    precision_report: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> Manifest:
        """The manifest built so far (after `_step_manifest`)."""
        if self.manifest is None:  # pragma: no cover - the driver's order guarantees it
            raise ExportError("internal: the manifest step has not run")
        return self.manifest


def export_detector(
    detector: BaseDetector,
    meta: dict[str, Any],
    target: str,
    precision: str,
    out: str | Path,
    *,
    parity_inputs: np.ndarray | None = None,
    evaluate: Evaluator | None = None,
    device_profile: str | None = None,
    index: dict[str, Any] | None = None,
    data: ExportData | None = None,
    progress: Progress = no_progress,
    threads: int | None = None,
    choose_by_timing: bool = True,
) -> Manifest:
    """Export a fitted detector to the bundle `out` and return the manifest written.

    Args:
        detector: fitted detector (any registered family).
        meta: the run metadata (run.json): threshold, normalisation, config, metrics.
        target: "onnx" (ONNX Runtime), "openvino" (adds IR) or "tensorrt" (alias "engine": ONNX
            + engine build settings; the engine is built on the device). Tabular detectors refuse
            "tensorrt" (their graphs gain nothing from it).
        precision: "fp32", "fp16" (openvino / tensorrt), "bf16" (openvino) or "int8" (see
            `edgead.export.precision`: bf16 / int8 are kept only when their AUROC change on the
            run's test images, measured through the runtime, is within --max-auroc-drop).
        parity_inputs: a few real inputs (uint8 (N, S, S, 3) images already resized with
            resize_frame, or float32 (N, D) rows) for the parity check; None uses synthetic ones.
        evaluate: measures metrics of a candidate bundle through the runtime (see
            `edgead.evaluation.evaluate_bundle`); None skips the metrics.
        device_profile: name of the device profile the export is meant for (recorded).
        index: `edgead.export.index.IndexOptions` fields as a dict (nn-index detectors only):
            {"index": name or faiss factory, "index_dim", "reduce", "rerank", "nprobe",
            "max_auroc_drop", "seed"}; None uses DEFAULT_INDEX_BY_KIND.
        data: the run's test data and held-out normal validation inputs (`ExportData`): the
            index's AUROC change is measured on the test images, a compressed index's threshold
            is re-fitted on the validation inputs. None: measured on bank vectors only and the
            threshold is scaled by the median distance ratio (both logged and recorded).
        threads: threads the `auto` timings run with (None: the libraries' defaults).
        choose_by_timing: with precision "auto" or index "auto" (image nn_index, no
            device_profile), export every candidate and keep the fastest here
            (`edgead.export.auto`); False keeps index "auto" as the accuracy ladder only.

    Raises:
        ExportError: unsupported target/precision, tracing or parity failure (nothing written).
    """
    config = ExportConfig(
        target=target,
        precision=precision,
        device_profile=device_profile,
        index=index,
        threads=threads,
        choose_by_timing=choose_by_timing,
    )
    config.check_detector(detector)
    if config.choose_by_timing and _wants_auto(detector, config):
        return _export_by_timing(detector, meta, config, out, parity_inputs, evaluate, data)
    return run_export(
        detector,
        meta,
        config,
        out,
        parity_inputs=parity_inputs,
        evaluate=evaluate,
        data=data,
        progress=progress,
    )


def run_export(
    detector: BaseDetector,
    meta: dict[str, Any],
    config: ExportConfig,
    out: str | Path,
    *,
    parity_inputs: np.ndarray | None = None,
    evaluate: Evaluator | None = None,
    data: ExportData | None = None,
    progress: Progress = no_progress,
) -> Manifest:
    """The export pipeline for one bundle (no "auto" choice: see `export_detector`).

    graphs -> index -> manifest -> parity -> calibration -> measurement -> write; each step is
    one function below. Nothing is written to `out` unless every step passed.
    """
    if config.precision == "auto":
        raise ExportError("precision 'auto' chooses among bundles: call export_detector")
    config.check_detector(detector)
    build = _prepare(detector, meta, config, data)
    progress(0, 5, "export")
    _step_graphs(build)
    progress(1, 5, "export")
    _step_index(build)
    _step_manifest(build, parity_inputs)
    progress(2, 5, "export")
    with tempfile.TemporaryDirectory(prefix="edgead-export-") as tmp:
        candidate = Path(tmp) / "candidate.edgead"
        _step_parity(build, candidate)
        _step_calibration(build, candidate)
        progress(3, 5, "export")
        _step_measurement(build, candidate, evaluate)
    progress(4, 5, "export")
    written = _step_write(build, out)
    progress(5, 5, "export")
    logger.info("exported %s (%s, %s) to %s", detector.name, config.target, config.precision, out)
    return written


def _prepare(
    detector: BaseDetector, meta: dict[str, Any], config: ExportConfig, data: ExportData | None
) -> _Build:
    """The detector's ExportSpec and the index options in effect (tiled runs search exactly)."""
    detector.check_is_fitted()
    spec = detector.export_spec()
    kind = str(spec.postprocess.get("kind"))
    index = config.index
    if meta.get("tiling") and kind == "nn_index" and not (index or {}).get("index"):
        # the validation frames cannot re-fit a compressed index's threshold tile by tile
        logger.info("tiled run: exact ('flat') index unless --index is given")
        index = {**(index or {}), "index": "flat"}
    graph_search = _wants_graph_index(index)
    bank = None
    if graph_search:  # exact search inside the graph: the bank becomes graph constants
        bank = spec.arrays.get("memory_bank")
        if bank is None:
            raise ExportError(f"--index graph: {detector.name} has no memory bank to search")
        spec = in_graph_spec(spec, bank)
    return _Build(detector, meta, config, data, spec, kind, index, graph_search, bank)


def _step_graphs(build: _Build) -> None:
    """Trace the module to ONNX (checked) and, for OpenVINO, convert it to IR."""
    spec, precision = build.spec, build.config.precision
    t0 = time.perf_counter()
    onnx_model = export_onnx(
        spec.module, spec.example_input, spec.input_name, spec.output_names, spec.dynamic_batch
    )
    build.timings["onnx_s"] = time.perf_counter() - t0
    build.members["model.onnx"] = onnx_model
    build.graphs["onnx"] = "model.onnx"
    if build.config.target == "openvino":
        t1 = time.perf_counter()
        xml, weights = export_openvino_ir(onnx_model, fp16=precision == "fp16")
        build.members.update({"model.xml": xml, "model.bin": weights})
        build.graphs["openvino"] = "model.xml"
        build.timings["openvino_s"] = time.perf_counter() - t1


def _step_index(build: _Build) -> None:
    """The nearest-neighbour index the post-processing needs (measured), and the arrays."""
    spec, kind = build.spec, build.kind
    build.arrays = dict(spec.arrays)
    if build.graph_bank is not None:
        k = int(spec.postprocess.get("k", 1))
        build.index_report = graph_index_report(build.graph_bank, k)
    elif kind.endswith("nn_index"):
        if "memory_bank" not in build.arrays:
            raise ExportError(
                f"{build.detector.name}: post-processing {kind!r} needs arrays['memory_bank']"
            )
        bank = build.arrays.pop("memory_bank")
        t_index = time.perf_counter()
        options = _index_options(kind, spec.postprocess, build.index)
        validation = _index_validation(build.detector, spec, kind, build.data)
        index_build = build_index(bank, options, validation=validation)
        build.timings["index_s"] = time.perf_counter() - t_index
        build.index_build, build.index_report = index_build, index_build.report
        build.members[INDEX_FILE] = index_build.data
        build.arrays.update(index_build.arrays)
        if not _is_exact(index_build.spec):
            build.exact_index = _exact_index(bank, index_build.spec)
    elif build.index:
        raise ExportError(
            f"--index applies to nearest-neighbour detectors; {build.detector.name} has none"
        )
    from edgead.bundle import array_to_npy_bytes

    build.array_members = {name: f"arrays/{name}.npy" for name in build.arrays}
    for name, member in build.array_members.items():
        build.members[member] = array_to_npy_bytes(build.arrays[name])


def _step_manifest(build: _Build, parity_inputs: np.ndarray | None) -> None:
    """Torch reference outputs of the parity inputs, and the candidate manifest."""
    detector, spec, meta, config = build.detector, build.spec, build.meta, build.config
    build.inputs, build.inputs_source = _reference_inputs(detector, spec, parity_inputs)
    build.reference = run_torch(spec.module, build.inputs, spec.output_names)
    outputs = tuple(
        OutputSpec(name=name, shape=(None, *build.reference[name].shape[1:]))
        for name in spec.output_names
    )
    # a few inputs and the torch fp32 outputs travel in the bundle: devices check backends with them
    reference_spec, reference_files = reference_members(
        *pick_reference(build.inputs, build.reference),
        source=f"torch fp32 ({build.inputs_source} inputs)",
    )
    build.members.update(reference_files)
    threshold = (meta.get("threshold") or {}).get("value")
    tensorrt = {"tensorrt": {"precision": config.precision, **TENSORRT_BUILD}}
    from edgead.config import to_dict

    run_config = meta.get("config") or to_dict(detector.config)
    build.manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        edgead_version=__version__,
        detector=detector.name,
        modality=detector.modality,
        target=config.target,
        # bf16 / int8: parity runs in fp32 first; `_control_precision` switches afterwards
        precision="fp32" if config.precision in CONTROLLED else config.precision,
        graphs=build.graphs,
        input=_input_spec(detector, spec, meta),
        outputs=outputs,
        postprocess=dict(spec.postprocess),
        threshold=None if threshold is None else float(threshold),
        normalisation=dict(meta.get("normalisation") or {}),
        backbone=run_config.get("backbone"),
        index=None if build.index_build is None else build.index_build.spec,
        arrays=build.array_members,
        build=tensorrt if config.target == "tensorrt" else {},
        config=dict(run_config),
        reference=reference_spec,
        # the run's data record, so evaluating the candidate finds its label column and options
        export={"run": {"seed": meta.get("seed"), "data": meta.get("data")}},
    )


def _step_parity(build: _Build, candidate: Path) -> None:
    """Write the candidate (exact search when the index is compressed) and check parity."""
    manifest = build.current
    if build.exact_index is not None:
        # Parity with exact search first: the torch model scores with the exact bank, so the
        # score check is only meaningful (and keeps its tight tolerance) with the same search.
        rerank = _rerank_members(build.array_members)
        exact_members = {
            **{k: v for k, v in build.members.items() if k not in rerank},
            INDEX_FILE: build.exact_index[0],
        }
        exact_manifest = dataclasses.replace(
            manifest,
            index=build.exact_index[1],
            arrays={k: v for k, v in build.array_members.items() if v not in rerank},
        )
        write_bundle(candidate, exact_manifest, exact_members)
    else:
        write_bundle(candidate, manifest, build.members)
    t0 = time.perf_counter()
    precision = build.config.precision
    level = "fp32" if precision in CONTROLLED else precision
    build.parity = _parity(
        build.detector, candidate, build.config.target, level, build.inputs, build.reference
    )
    build.timings["parity_s"] = time.perf_counter() - t0


def _step_calibration(build: _Build, candidate: Path) -> None:
    """Re-fit the threshold after a compressed index or a lower precision; add tiling."""
    modality = build.detector.modality
    if build.exact_index is not None and build.index_build is not None:
        exact_scores = runtime_raw_scores(candidate, build.inputs, modality)
        write_bundle(candidate, build.current, build.members)
        t0 = time.perf_counter()
        build.parity["index"] = _refit(build, candidate, build.index_build.report, exact_scores)
        build.timings["calibration_s"] = time.perf_counter() - t0
    tiling = build.meta.get("tiling")
    if tiling:  # parity was per tile; the runtime now tiles frames (edgead.ops.tiling)
        post = {**build.current.postprocess, "tiling": dict(tiling)}
        build.manifest = dataclasses.replace(build.current, postprocess=post)
        write_bundle(candidate, build.current, build.members)
    if build.config.precision in CONTROLLED:
        _step_precision(build, candidate)


def _refit(
    build: _Build,
    candidate: Path,
    change: dict[str, Any],
    before: np.ndarray,
    backend: str = "onnxruntime",
) -> dict[str, Any]:
    """Re-fit the threshold through `candidate` (`calibrate.refit_through_bundle`), record it
    and rewrite the candidate; returns how much the parity inputs' scores moved from `before`."""
    build.manifest, build.calibration, moved = refit_through_bundle(
        candidate,
        build.current,
        build.meta,
        build.detector.modality,
        _normal_inputs(build.data),
        change,
        build.inputs,
        before,
        backend=backend,
    )
    write_bundle(candidate, build.current, build.members)
    return moved


def _step_precision(build: _Build, candidate: Path) -> None:
    """bf16 / int8 kept within the AUROC budget, and the threshold re-fitted through it."""
    precision = build.config.precision
    t0 = time.perf_counter()
    build.manifest, build.members, report = _control_precision(
        candidate,
        build.current,
        build.members,
        precision,
        build.data,
        build.spec.input_name,
        build.inputs,
        build.index,
    )
    if build.current.threshold is not None:
        change = {
            "factory": f"{precision} graph",
            "dist_ratio_median": report["score_median_ratio"],
        }
        _refit(build, candidate, change, report["fp32_scores"], backend=report["calibrated_on"])
    report.pop("fp32_scores")
    build.precision_report = report
    build.timings["precision_s"] = time.perf_counter() - t0


def _step_measurement(build: _Build, candidate: Path, evaluate: Evaluator | None) -> None:
    """Metrics of the candidate through the runtime on the run's test data (when given)."""
    if evaluate is None:
        return
    t0 = time.perf_counter()
    build.metrics = dict(evaluate(candidate, None))
    build.timings["evaluate_s"] = time.perf_counter() - t0
    if build.config.precision == "fp16":
        # model.onnx is fp32 and matched torch within the fp32 tolerance above, so ONNX
        # Runtime's result is the fp32 reference the fp16 change is measured against.
        build.metrics.update(_fp16_change(build.metrics, evaluate(candidate, "onnxruntime")))
    build.metrics.update(_metric_deltas(build.metrics, build.meta))


def _step_write(build: _Build, out: str | Path) -> Manifest:
    """The final bundle with the export record, written atomically to `out`."""
    import torch

    meta = build.meta
    export_info = {
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "dynamic_batch": bool(build.spec.dynamic_batch),
        "torch_version": torch.__version__,
        "parity_inputs": {"n": int(len(build.inputs)), "source": build.inputs_source},
        "parity": build.parity,
        "index": build.index_report,
        "calibration": build.calibration,
        "precision": build.precision_report,
        "device_profile": build.config.device_profile,
        "run": {"seed": meta.get("seed"), "data": meta.get("data")},
        "host": platform.machine(),
        "timings_s": {k: round(v, 3) for k, v in build.timings.items()},
    }
    manifest = dataclasses.replace(build.current, metrics=build.metrics, export=export_info)
    return write_bundle(out, manifest, build.members)


def _control_precision(
    candidate: Path,
    manifest: Manifest,
    members: dict[str, bytes],
    precision: str,
    data: ExportData | None,
    input_name: str,
    parity_inputs: np.ndarray,
    index: dict[str, Any] | None,
) -> tuple[Manifest, dict[str, bytes], dict[str, Any]]:
    """(manifest, members, report) of the bf16 / int8 bundle, within the AUROC budget.

    `candidate` holds the fp32 bundle that passed parity. Its image / pixel AUROC on the run's
    test images through each backend the target runs is the reference; each low-precision
    candidate (int8: every scope of INT8_SCOPES, in order) is written to `candidate`, measured
    the same way, and the first whose drop stays within --max-auroc-drop is kept.

    Raises:
        ExportError: no labelled test images (or, for int8, no held-out normal images to
            calibrate on), or every candidate breaks the budget (the message names the drop).
    """
    if data is None or data.test_inputs is None or data.test_labels is None:
        raise ExportError(
            f"--precision {precision} is kept only after measuring its AUROC change on the "
            "run's labelled test images, and none are available; export with the run's data "
            "(--data) or use --precision fp32"
        )
    max_drop = float((index or {}).get("max_auroc_drop", IndexOptions().max_auroc_drop))
    backends = ["openvino"] if precision == "bf16" else ["onnxruntime"]
    if precision == "int8" and "openvino" in manifest.graphs:
        backends.append("openvino")
    images, labels, masks = data.test_inputs, np.asarray(data.test_labels), data.test_masks
    reference = {b: runtime_aurocs(candidate, b, images, labels, masks) for b in backends}
    # the threshold is re-fitted through the backend the device runs first (OpenVINO when the
    # bundle has IR), so the scores compared here come from it too
    main_backend = backends[-1]
    fp32_scores = runtime_raw_scores(candidate, parity_inputs, manifest.modality, main_backend)
    calibration = data.calibration_inputs() if precision == "int8" else None
    if precision == "int8" and (calibration is None or not len(calibration)):
        raise ExportError(
            "--precision int8 calibrates on the run's normal images (held out, else training), "
            "which could not be read (see the log); export with the run's data or use fp32 / bf16"
        )
    tried: list[dict[str, Any]] = []
    scopes: tuple[str, ...] = ("graph",)
    if precision == "int8":
        from edgead.export.quantize import scopes_that_differ

        scopes = scopes_that_differ(members[manifest.graphs["onnx"]], INT8_SCOPES)
    for scope in scopes:
        report: dict[str, Any] = {"precision": precision, "max_auroc_drop": max_drop}
        cand_members = members
        if precision == "int8":
            accuracy = None
            if "openvino" in reference and INT8_OPENVINO == "nncf":
                validate = nncf_validator(candidate, labels, masks, reference["openvino"][0])
                accuracy = (validate, _stack_images(images), max_drop)
            cand_members, quant = int8_members(
                members,
                manifest.graphs,
                np.asarray(calibration),
                input_name,
                scope,
                accuracy=accuracy,
            )
            report.update(quant)
        cand_manifest = dataclasses.replace(manifest, precision=precision)
        write_bundle(candidate, cand_manifest, cand_members)
        changes = {}
        for backend in backends:
            got, scores = runtime_aurocs(candidate, backend, images, labels, masks)
            changes[backend] = measure_change(
                reference[backend][0], got, reference[backend][1], scores
            )
        report["auroc_change"] = changes
        report["rejected"] = over_budget(changes, max_drop)
        tried.append({"scope": scope, "rejected": report["rejected"], "auroc_change": changes})
        logger.info("precision %s (%s): %s", precision, scope, changes)
        if report["rejected"] is None:
            if precision == "int8":  # devices check their int8 backend against this tolerance
                errors = {b: reference_error(candidate, b) for b in backends}
                cand_manifest = with_tolerance(
                    cand_manifest, "int8", MEASURED_TOLERANCE_MARGIN * max(errors.values())
                )
                report["reference_max_rel_err"] = errors
            scores = runtime_raw_scores(candidate, parity_inputs, manifest.modality, main_backend)
            report["score_median_ratio"] = float(
                np.median(scores / np.maximum(np.abs(fp32_scores), 1e-12))
            )
            report["fp32_scores"] = fp32_scores
            report["calibrated_on"] = main_backend
            report["tried"] = tried
            return cand_manifest, cand_members, report
        logger.warning("precision %s (%s) refused: %s", precision, scope, report["rejected"])
    raise ExportError(
        f"--precision {precision}: {tried[-1]['rejected']} against fp32, measured through the "
        "runtime on the run's test images; nothing was written. Use --precision fp32 (or "
        "bf16), or a larger --max-auroc-drop"
    )


def with_tolerance(manifest: Manifest, precision: str, tolerance: float) -> Manifest:
    """`manifest` with `tolerance` as its reference tolerance for `precision`."""
    reference = dict(manifest.reference)
    reference["tolerance"] = {**dict(reference.get("tolerance") or {}), precision: tolerance}
    return dataclasses.replace(manifest, reference=reference)


def _wants_auto(detector: BaseDetector, config: ExportConfig) -> bool:
    """Whether `--precision auto` / `--index auto` (image nn-index, this machine) is asked."""
    name = str((config.index or {}).get("index") or "").strip().lower()
    index_auto = name == "auto" and config.device_profile is None and detector.modality == "image"
    return config.precision == "auto" or (
        index_auto and detector.export_spec().postprocess.get("kind") == "nn_index"
    )


def _export_by_timing(
    detector: BaseDetector,
    meta: dict[str, Any],
    config: ExportConfig,
    out: str | Path,
    parity_inputs: np.ndarray | None,
    evaluate: Evaluator | None,
    data: ExportData | None,
) -> Manifest:
    """`edgead.export.auto.export_auto` over this exporter (candidates exported one by one)."""
    from edgead.export.auto import export_auto, precision_candidates

    if data is None or data.test_inputs is None or detector.modality != "image":
        raise ExportError(
            "--index auto / --precision auto time the candidates on the run's test images, "
            "which are not available; export with the run's data or choose explicitly"
        )
    name = str((config.index or {}).get("index") or "").strip().lower()
    is_nn = detector.export_spec().postprocess.get("kind") == "nn_index"

    def export_one(options: dict[str, Any] | None, prec: str, path: Path) -> Manifest:
        return export_detector(
            detector,
            meta,
            config.target,
            prec,
            path,
            parity_inputs=parity_inputs,
            evaluate=evaluate,
            index=options,
            data=data,
            choose_by_timing=False,
        )

    frames = [
        np.ascontiguousarray(np.asarray(data.test_inputs[i])[..., ::-1])  # RGB -> BGR frames
        for i in range(min(12, len(data.test_inputs)))
    ]
    return export_auto(
        export_one,
        config.index,
        index_auto=is_nn and name == "auto",
        precisions=precision_candidates(config.target, config.precision),
        frames=frames,
        out=out,
        threads=config.threads,
    )


def _stack_images(images: Any) -> np.ndarray:
    """uint8 (N, S, S, 3) from a sequence of (S, S, 3) images."""
    return np.stack([np.asarray(img, dtype=np.uint8) for img in images])


def _wants_graph_index(index: dict[str, Any] | None) -> bool:
    """Whether the user asked for exact search inside the graph (`--index graph`)."""
    name = (index or {}).get("index")
    return isinstance(name, str) and name.strip().lower() == "graph"


def _index_options(
    kind: str, postprocess: dict[str, Any], index: dict[str, Any] | None
) -> IndexOptions:
    """IndexOptions from the user's --index options, with the per-kind default and the spec's k.

    Raises:
        ExportError: unknown option names or values out of range (the message names them).
    """
    given = dict(index or {})
    if given.get("index") is None:
        given["index"] = DEFAULT_INDEX_BY_KIND.get(kind, DEFAULT_INDEX)
    given = {key: value for key, value in given.items() if value is not None}
    given["k"] = int(postprocess.get("k", 1))
    try:
        options = IndexOptions.from_mapping(given)
        options.validate()
    except ConfigError as exc:
        raise ExportError(f"index options: {exc}") from exc
    return options


def _index_validation(
    detector: BaseDetector, spec: ExportSpec, kind: str, data: ExportData | None
) -> IndexValidation | None:
    """Patch embeddings (torch module) + labels + masks of the run's test images, or None.

    Only image "nn_index" post-processing is measured on images; kNN/LOF rows (and exports
    without labelled test data) are measured on noisy bank vectors by `build_index` (logged).
    """
    if kind != "nn_index" or data is None or data.test_inputs is None or data.test_labels is None:
        if kind == "nn_index":
            logger.warning(
                "no labelled test images for %s: the index's AUROC change cannot be measured, "
                "only recall and distance error on bank vectors",
                detector.name,
            )
        return None
    if "embedding" not in spec.output_names:
        raise ExportError(f"{detector.name}: nn_index export needs an 'embedding' graph output")
    images = np.stack([np.asarray(img, dtype=np.uint8) for img in data.test_inputs])
    labels = np.asarray(data.test_labels).astype(np.int64)
    masks = None
    if data.test_masks is not None:
        masks = np.stack([np.asarray(m, dtype=bool) for m in data.test_masks])

    def embed(batch: np.ndarray) -> np.ndarray:
        return run_torch(spec.module, batch, spec.output_names)["embedding"]

    return validation_from_images(embed, images, labels, masks, spec.postprocess)


def _is_exact(spec: IndexSpec) -> bool:
    """Whether the index searches exactly like the fitted model (fp32 Flat, no re-ranking)."""
    return spec.factory.strip() == "Flat" and not spec.rerank


def _exact_index(bank: np.ndarray, spec: IndexSpec) -> tuple[bytes, IndexSpec]:
    """(bytes, IndexSpec) of an exact fp32 Flat index of `bank`, for the parity check."""
    from edgead.ops.nn_index import FaissIndex

    exact = FaissIndex.build(np.ascontiguousarray(bank, dtype=np.float32), "Flat")
    exact_spec = IndexSpec(
        file=INDEX_FILE,
        factory="Flat",
        metric="l2",
        dim=spec.dim,
        n_vectors=spec.n_vectors,
        k=spec.k,
    )
    return exact.to_bytes(), exact_spec


def _rerank_members(array_members: dict[str, str]) -> set[str]:
    """Bundle members of the index's re-rank arrays (not part of an exact-index bundle)."""
    from edgead.export.index import RERANK_ARRAY

    return {member for name, member in array_members.items() if name == RERANK_ARRAY}


def _parity(
    detector: BaseDetector,
    candidate: Path,
    target: str,
    precision: str,
    inputs: np.ndarray,
    reference: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Graph and score parity of every backend the target runs on here; ExportError on mismatch."""
    from edgead.runtime.detector import Detector

    backends = ["onnxruntime"] + (["openvino"] if target == "openvino" else [])
    # ONNX Runtime runs the fp32 model.onnx of every bundle: the tight fp32 tolerance holds there.
    torch_scores = detector.score(list(inputs) if detector.modality == "image" else inputs).scores
    report: dict[str, Any] = {}
    for name in backends:
        level = precision if name == "openvino" else "fp32"
        det = Detector.load(candidate, device="cpu", backend=name)
        try:
            if det.fallbacks:
                raise ExportError(
                    f"parity check needs {name}, but it could not load the graph: "
                    f"{det.fallbacks[-1]}"
                )
            graph_out = det.run_graph(inputs)
            entry: dict[str, Any] = {
                "backend": det.backend,
                "precision": level,
                "backend_info": det.backend_info,
                "outputs": check_graph_parity(
                    _squared_distances(graph_out), _squared_distances(reference), level, det.backend
                ),
            }
            scores = runtime_scores_of(det, inputs, detector.modality)
            entry["score"] = check_score_parity(scores, torch_scores, level, det.backend)
            report[name] = entry
            logger.info("parity %s: %s", det.backend, entry)
        finally:
            det.close()
    if target == "tensorrt":
        report["tensorrt"] = {
            "checked": False,
            "reason": "the engine is built on the device; ONNX Runtime checked model.onnx here",
        }
    return report


def _squared_distances(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs with in-graph search distances squared, for the graph parity check.

    The search computes d^2 = ||q||^2 + ||b||^2 - 2 q.b (as faiss's exact search does); its
    rounding error is absolute in d^2 (~eps ||q||^2), so a distance near 0 (a training patch
    that is in the bank) carries an error of sqrt(eps ||q||^2) after the square root. Compared
    squared, the error is uniform; the per-image score parity below keeps its own tolerance.
    """
    from edgead.export.graph_index import DISTANCES_OUTPUT

    if DISTANCES_OUTPUT not in outputs:
        return outputs
    return {**outputs, DISTANCES_OUTPUT: np.square(outputs[DISTANCES_OUTPUT], dtype=np.float64)}


def _fp16_change(metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """{"<metric>_fp32", "<metric>_fp16_change"} for the headline metric (fp16 minus fp32)."""
    out: dict[str, Any] = {}
    for key in ("image_auroc", "auroc"):
        if key in metrics and key in reference:
            out[f"{key}_fp32"] = float(reference[key])
            out[f"{key}_fp16_change"] = float(metrics[key]) - float(reference[key])
            logger.info(
                "fp16 changes %s by %+.4f (fp32 %.4f)",
                key,
                out[f"{key}_fp16_change"],
                reference[key],
            )
    return out


def _metric_deltas(metrics: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """{"<metric>_run", "<metric>_delta"} for the headline metric, vs the run's stored value."""
    run_metrics = {**(meta.get("validation") or {}), **(meta.get("metrics") or {})}
    out: dict[str, Any] = {}
    for key in ("image_auroc", "auroc"):
        if key in metrics and isinstance(run_metrics.get(key), (int, float)):
            out[f"{key}_run"] = float(run_metrics[key])
            out[f"{key}_delta"] = float(metrics[key]) - float(run_metrics[key])
    return out


def export_run(
    run_dir: str | Path,
    target: str,
    precision: str,
    out: str | Path,
    device_profile: str | None = None,
    index: dict[str, Any] | None = None,
    progress: Progress = no_progress,
    data: str | Path | None = None,
    threads: int | None = None,
) -> Manifest:
    """Export the run in `run_dir` to the bundle `out` (see `export_detector`).

    Parity inputs and export-time metrics come from the run's data (`run.json` data.path, or
    `data`) when it can be read; otherwise synthetic inputs are used and metrics are skipped
    (both logged and recorded in the manifest).
    """
    from edgead.rundir import load_run, load_split

    detector, meta = load_run(run_dir)
    split = load_split(run_dir)
    data_path = Path(data) if data is not None else _run_data_path(meta)
    parity_inputs = None
    export_data: ExportData | None = None
    evaluate: Evaluator | None = None
    # "elpv" names the elpv-dataset package's data, not a folder
    if data_path is not None and (data_path.exists() or str(data_path) == "elpv"):
        parity_inputs, export_data = _parity_inputs_from_data(detector, data_path, meta, split)
        from edgead.evaluation import evaluate_bundle

        def evaluate(bundle: Path, backend: str | None) -> dict[str, Any]:
            return evaluate_bundle(bundle, data_path, device="cpu", backend=backend)

        if export_data is not None and export_data.test_labels is None:
            logger.info("%s has no labelled test data: the manifest gets no metrics", data_path)
            evaluate = None
    else:
        logger.warning(
            "run data %s is not available; parity uses synthetic inputs and the "
            "manifest gets no metrics",
            data_path,
        )
    return export_detector(
        detector,
        meta,
        target,
        precision,
        out,
        parity_inputs=parity_inputs,
        evaluate=evaluate,
        device_profile=device_profile,
        index=index,
        data=export_data,
        progress=progress,
        threads=threads,
    )


def _run_data_path(meta: dict[str, Any]) -> Path | None:
    path = (meta.get("data") or {}).get("path")
    return Path(path) if path else None


def _parity_inputs_from_data(
    detector: BaseDetector,
    data_path: Path,
    meta: dict[str, Any],
    split: RunSplit | None = None,
    n_train: int = 3,
    n_test: int = 3,
) -> tuple[np.ndarray | None, ExportData | None]:
    """(a few training and test inputs, the run's test data + held-out validation loader) from
    the run's data, or (None, None) (logged) when unreadable."""
    from edgead.evaluation import load_eval_data

    try:
        train, test, labels, masks = load_eval_data(
            data_path, meta, detector.modality, with_train=True
        )
    except Exception as exc:  # noqa: BLE001 - data problems only weaken the check; logged
        logger.warning(
            "cannot read %s for the parity check (%s); using synthetic inputs", data_path, exc
        )
        return None, None
    # Lazy image sequences load only the items picked here.
    picked = [train[i] for i in range(min(n_train, len(train)))]
    picked += [test[i] for i in range(min(n_test, len(test)))]
    has_test = len(labels) > 0  # a good-parts-only run has no labelled test data
    export_data = ExportData(
        test_inputs=test if has_test else None,
        test_labels=np.asarray(labels) if has_test else None,
        test_masks=masks if has_test else None,
        normal_val=lambda: _run_validation_inputs(detector, data_path, meta, split),
        train_inputs=train,
    )
    return (np.stack(picked) if picked else None), export_data


def _run_validation_inputs(
    detector: BaseDetector, data_path: Path, meta: dict[str, Any], split: RunSplit | None
) -> np.ndarray | None:
    """The run's held-out normal validation inputs, read back with the run's stored split.

    Returns None (logged as a warning) when they cannot be read: a run saved before splits were
    stored (no split.json; retrain to store it), a tiled run, a run that held out nothing, or
    data that no longer matches the split's fingerprint.
    """
    if meta.get("tiling"):
        logger.info("tiled run: validation frames are not re-read for the index calibration")
        return None
    if split is None:
        logger.warning(
            "the run stores no split (split.json; runs saved before edgead stored them): its "
            "held-out validation inputs cannot be read back. Retrain the run with `edgead "
            "train` to re-fit the threshold on them at export"
        )
        return None
    if not split.val_index:
        logger.warning("the run held out no validation data (val_fraction 0)")
        return None
    try:
        inputs, mismatch = _read_split(detector, data_path, meta, split)
    except Exception as exc:  # noqa: BLE001 - the caller falls back, logged and recorded
        logger.warning("cannot read the run's validation inputs from %s: %s", data_path, exc)
        return None
    if mismatch is not None:
        logger.warning("%s: %s; the run's validation inputs are not used", data_path, mismatch)
        return None
    return inputs


def _read_split(
    detector: BaseDetector, data_path: Path, meta: dict[str, Any], split: RunSplit
) -> tuple[np.ndarray | None, str | None]:
    """(held-out inputs, None) from the run's data, or (None, why the data does not match)."""
    info = dict(meta.get("data") or {})
    index = list(split.val_index)
    if detector.modality == "image" and split.modality == "image":
        from edgead.data.datasets import load_image_dataset

        size = int(detector.config.image_size)
        dataset = load_image_dataset(data_path, size, **dict(info.get("options") or {}))
        mismatch = split.check_images(getattr(dataset, "train_paths", []))
        if mismatch is not None:
            return None, mismatch
        images = dataset.train_images()
        return np.stack([np.asarray(images[i], dtype=np.uint8) for i in index]), None
    if detector.modality == "tabular" and split.modality == "tabular":
        from edgead.data.tabular import load_table

        table = load_table(data_path, info.get("label_column"))
        mismatch = split.check_rows(table.X)
        if mismatch is not None:
            return None, mismatch
        return np.asarray(table.X[index], dtype=np.float32), None
    return None, f"a {split.modality} split cannot feed a {detector.modality} detector"
