"""Reference outputs: a bundle checks the backend that runs it. Torch-free.

At export the bundle stores a few reference inputs (the graph's own input: uint8 (N, H, W, 3)
frames already resized, or float32 (N, D) rows) and the fp32 outputs of the model it was
exported from (torch), as `.npy` members listed in `manifest.reference` (and hashed in
`manifest.files` like every member)::

    "reference": {
        "inputs": "reference/inputs.npy",
        "outputs": {"embedding": "reference/embedding.npy"},
        "tolerance": {"fp32": 1e-3, "fp16": 5e-2},
        "metric": "max_rel_err",
        "source": "torch fp32"
    }

`check_reference(bundle, backend, precision)` runs the backend on the inputs and measures, per
output, max |backend - reference| / max |reference| (`max_errors`); above the manifest's
tolerance for the precision the backend runs at, it raises `ReferenceMismatchError` naming the
output and the measured error. A wrong TensorRT engine, a damaged OpenVINO IR or a graph whose
weights were changed after export (with the hashes recomputed) is refused this way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgead.bundle import Bundle, Manifest, npy_bytes_to_array
from edgead.errors import BundleError, ReferenceMismatchError
from edgead.runtime.backends.base import Backend, run_batched

logger = logging.getLogger(__name__)

#: Members the exporter writes (under reference/, hashed like every member).
INPUTS_MEMBER = "reference/inputs.npy"
#: max |backend - reference| / max |reference| allowed per precision the backend runs at.
#: fp32: export parity is held to 1e-4 on the exporting machine; another CPU or GPU sums in
#: another order (and TensorRT's TF32 is switched off for fp32 builds), so 1e-3 here.
#: fp16: the same budget as the export's fp16 parity check.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
#: an int8 bundle's tolerance ("int8" in `manifest.reference["tolerance"]`) is measured at export:
#: this many times the largest error of its int8 graph against the torch fp32 reference through
#: the backends it was exported for. int8 rounds every activation, so its error is far above any
#: fixed float tolerance (MPDD, efficientnet_lite0: 0.33 relative on ONNX Runtime and OpenVINO,
#: 0.08 between the two), while a broken int8 backend (e.g. OpenVINO's zero-point error on padded
#: average pools, issue 13: correlation -0.19) is far above it.
MEASURED_TOLERANCE_MARGIN = 2.0
#: at most this many reference items, and their outputs at most this many bytes in total (but
#: at least one item): a 224 px PatchCore (784 x 152 embedding) keeps 2 items, ~1.2 MB in all.
MAX_ITEMS = 2
MAX_OUTPUT_BYTES = 1024**2


@dataclass(frozen=True)
class ReferenceCheck:
    """The outcome of running a backend on the bundle's reference inputs.

    Attributes:
        backend: e.g. "openvino/CPU".
        precision: "fp32" | "fp16", the precision the backend runs the graph at.
        tolerance: the manifest's max relative error for that precision.
        outputs: output name -> {"max_abs_err", "max_rel_err"} (relative to max |reference|).
        n_items: reference inputs run.
    """

    backend: str
    precision: str
    tolerance: float
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    n_items: int = 0

    @property
    def max_rel_err(self) -> float:
        """The worst relative error over all outputs (NaN when an output is not finite)."""
        values = [v["max_rel_err"] for v in self.outputs.values()]
        return max(values) if values else 0.0

    @property
    def passed(self) -> bool:
        """True when every output is finite and within tolerance."""
        return all(
            np.isfinite(v["max_rel_err"]) and v["max_rel_err"] <= self.tolerance
            for v in self.outputs.values()
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with max_rel_err and passed added."""
        return {**asdict(self), "max_rel_err": self.max_rel_err, "passed": self.passed}


def max_errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|) between two arrays of equal shape.

    Raises:
        ValueError: the shapes differ (callers turn it into their own error).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape {actual.shape} vs reference {expected.shape}")
    if not actual.size:
        return 0.0, 0.0
    abs_err = float(np.max(np.abs(actual - expected)))
    if not np.isfinite(actual).all():
        abs_err = float("nan")
    scale = float(np.max(np.abs(expected)))
    return abs_err, abs_err / max(scale, 1e-12)


def pick_reference(
    inputs: np.ndarray, outputs: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The items of `inputs` / `outputs` kept as reference: at most MAX_ITEMS, spread evenly over
    the items (the parity inputs run from training to test images), and fewer when the outputs
    would take more than MAX_OUTPUT_BYTES (at least one item)."""
    per_item = sum(v[:1].nbytes for v in outputs.values())
    n = max(1, min(len(inputs), MAX_ITEMS, MAX_OUTPUT_BYTES // max(per_item, 1)))
    picked = np.unique(np.linspace(0, len(inputs) - 1, n).round().astype(np.int64))
    return (
        np.ascontiguousarray(inputs[picked]),
        {k: np.ascontiguousarray(v[picked], dtype=np.float32) for k, v in outputs.items()},
    )


def reference_members(
    inputs: np.ndarray, outputs: dict[str, np.ndarray], source: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest.reference, {member: .npy bytes}) for the exporter to add to a bundle."""
    from edgead.bundle import array_to_npy_bytes

    members = {INPUTS_MEMBER: array_to_npy_bytes(inputs)}
    output_members: dict[str, str] = {}
    for name, array in outputs.items():
        member = f"reference/{name}.npy"
        members[member] = array_to_npy_bytes(array.astype(np.float32))
        output_members[name] = member
    spec = {
        "inputs": INPUTS_MEMBER,
        "outputs": output_members,
        "tolerance": dict(DEFAULT_TOLERANCE),
        "metric": "max_rel_err",
        "source": source,
    }
    return spec, members


def has_reference(manifest: Manifest) -> bool:
    """True when the bundle carries reference inputs and outputs."""
    return bool(manifest.reference.get("inputs")) and bool(manifest.reference.get("outputs"))


def load_reference(bundle: Bundle) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(reference inputs, {output name: fp32 reference output}) decoded from the bundle.

    Raises:
        BundleError: no reference in the manifest, a member missing, or inputs and outputs
            whose item counts differ.
    """
    spec = bundle.manifest.reference
    if not has_reference(bundle.manifest):
        raise BundleError(
            f"bundle {bundle.path} carries no reference outputs (exported by an older edgead); "
            "re-export it to check backends, or load it with verify=False"
        )
    inputs = npy_bytes_to_array(bundle.member(spec["inputs"]), spec["inputs"])
    outputs = {
        str(name): npy_bytes_to_array(bundle.member(member), member)
        for name, member in dict(spec["outputs"]).items()
    }
    for name, array in outputs.items():
        if len(array) != len(inputs):
            raise BundleError(
                f"bundle {bundle.path}: reference output '{name}' has {len(array)} items, the "
                f"reference inputs {len(inputs)}; the bundle is inconsistent, re-export it"
            )
    return inputs, outputs


def tolerance_for(manifest: Manifest, precision: str) -> float:
    """The manifest's max relative error for `precision` ("fp32" | "fp16" | "int8")."""
    table = {**DEFAULT_TOLERANCE, **dict(manifest.reference.get("tolerance") or {})}
    if precision not in table:
        raise BundleError(
            f"the bundle's reference tolerance has no entry for {precision!r} ({sorted(table)}); "
            "int8 bundles record theirs at export since edgead 0.1 (2026-12-02): re-export it"
        )
    return float(table[precision])


def backend_precision(manifest: Manifest, backend: Backend) -> str:
    """Precision ("fp32" | "fp16" | "int8") the backend runs this bundle's graph at.

    ONNX Runtime's CPU and CUDA providers run model.onnx as it is (fp32, or the QDQ graph of an
    int8 bundle); its TensorRT provider and the native TensorRT engine run the build precision;
    OpenVINO runs the IR at the bundle's precision (an int8 bundle's IR is int8) unless the
    plugin settled on f16/bf16 (GPU without an f32 hint, NPU).
    """
    name = backend.name.lower()
    trt_precision = str(manifest.build.get("tensorrt", {}).get("precision", manifest.precision))
    if name.startswith("tensorrt/"):
        return str(backend.info.get("precision", trt_precision))
    if name.startswith("onnxruntime/"):
        if name.endswith("tensorrtexecutionprovider"):
            return trt_precision
        return "int8" if manifest.precision == "int8" else "fp32"
    if name.startswith("openvino/"):
        if manifest.precision == "int8":
            return "int8"
        used = str(backend.info.get("precision_hint_used") or "")
        if manifest.precision == "fp16" or used in ("f16", "bf16") or "npu" in name:
            return "fp16"
        return "fp32"
    return str(manifest.precision)


def measure_reference(
    bundle: Bundle, backend: Backend, precision: str | None = None
) -> ReferenceCheck:
    """Run `backend` on the bundle's reference inputs and measure the error per output.

    Args:
        bundle: a verified bundle with reference outputs.
        backend: the backend to check (already built on its device).
        precision: the precision it runs at; None asks `backend_precision`.

    Raises:
        BundleError: the bundle has no (or inconsistent) reference data.
        ReferenceMismatchError: an output is missing or has the wrong shape.
    """
    level = precision or backend_precision(bundle.manifest, backend)
    tolerance = tolerance_for(bundle.manifest, level)
    report, n_items = reference_errors(bundle, backend)
    return ReferenceCheck(
        backend=backend.name,
        precision=level,
        tolerance=tolerance,
        outputs=report,
        n_items=n_items,
    )


def reference_errors(bundle: Bundle, backend: Backend) -> tuple[dict[str, dict[str, float]], int]:
    """({output name: {"max_abs_err", "max_rel_err"}}, reference inputs run): `backend` on the
    bundle's reference inputs against its reference outputs, whatever the tolerance.

    Raises:
        BundleError: the bundle has no (or inconsistent) reference data.
        ReferenceMismatchError: an output is missing or has the wrong shape.
    """
    inputs, expected = load_reference(bundle)
    outputs = run_batched(backend, inputs, tuple(expected))
    report: dict[str, dict[str, float]] = {}
    for name, reference in expected.items():
        try:
            abs_err, rel_err = max_errors(outputs[name], reference)
        except ValueError as exc:
            raise ReferenceMismatchError(
                f"{backend.name}: output '{name}' does not match the bundle's reference ({exc}); "
                "the graph was changed after export, re-export the bundle"
            ) from exc
        report[name] = {"max_abs_err": abs_err, "max_rel_err": rel_err}
    return report, len(inputs)


def check_reference(
    bundle: Bundle, backend: Backend, precision: str | None = None
) -> ReferenceCheck:
    """`measure_reference`, raising ReferenceMismatchError (with the measured error) on failure."""
    check = measure_reference(bundle, backend, precision)
    if not check.passed:
        worst = max(
            check.outputs, key=lambda k: np.nan_to_num(check.outputs[k]["max_rel_err"], nan=np.inf)
        )
        err = check.outputs[worst]
        raise ReferenceMismatchError(
            f"{check.backend} fails the bundle's reference check: output '{worst}' differs from "
            f"the exported model by max abs {err['max_abs_err']:.3g} (relative "
            f"{err['max_rel_err']:.3g}, tolerance {check.tolerance:g} at {check.precision}) on "
            f"{check.n_items} reference input(s); this backend would score wrongly. Rebuild the "
            "engine, use another backend, or re-export the bundle if its graph was changed"
        )
    logger.info(
        "reference check passed on %s: max rel err %.3g (tolerance %g, %s)",
        check.backend,
        check.max_rel_err,
        check.tolerance,
        check.precision,
    )
    return check
