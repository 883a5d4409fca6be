"""OpenVINO backend: IR (model.xml + model.bin) compiled on CPU, GPU, NPU or AUTO.

One `openvino.Core` per backend object (created here, never at import time), an explicit
`INFERENCE_PRECISION_HINT` (this CPU would otherwise run bf16), one infer request owned by the
backend, and outputs copied before they leave it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgead.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

DEVICES = ("CPU", "GPU", "NPU", "AUTO")


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            "openvino is not installed; install it with `pip install edgead[openvino]`"
        ) from exc
    return openvino


class OpenVinoBackend:
    """One compiled OpenVINO model on one device.

    Args:
        xml: bytes of model.xml; weights: bytes of model.bin.
        device: "CPU", "GPU", "NPU" or "AUTO" (case-insensitive).
        precision: "fp32" -> INFERENCE_PRECISION_HINT f32; "fp16" -> f16 (the plugin may pick
            bf16 on CPUs without fp16 arithmetic); "bf16" -> bf16.
        threads: INFERENCE_NUM_THREADS on CPU; None leaves OpenVINO's default.
    """

    def __init__(
        self,
        xml: bytes,
        weights: bytes,
        device: str = "CPU",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        ov = _import_openvino()
        device = device.upper()
        if device not in DEVICES:
            raise BackendUnavailableError(
                f"openvino has no device {device!r}; use one of {DEVICES}"
            )
        self._core = ov.Core()
        available = list(self._core.available_devices)
        if device != "AUTO" and not any(d.split(".")[0] == device for d in available):
            raise BackendUnavailableError(
                f"openvino offers devices {available}, not {device}; install the {device} plugin "
                "and driver or use device='cpu'"
            )
        # int8 graphs carry their own quantized layers; the float rest runs f32
        hint = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}.get(precision)
        if hint is None:
            raise BackendUnavailableError(
                f"unknown precision {precision!r}; use fp32, fp16 or bf16"
            )
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device in ("CPU", "GPU"):
            config["INFERENCE_PRECISION_HINT"] = hint
        if threads is not None and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = self._core.read_model(
                model=xml, weights=ov.Tensor(np.frombuffer(weights, np.uint8))
            )
            self._compiled = self._core.compile_model(model, device, config)
        except (RuntimeError, ValueError) as exc:  # ValueError: e.g. XML that is not UTF-8
            raise BackendUnavailableError(
                f"openvino could not compile the graph on {device}: {exc}"
            ) from exc
        self._request = self._compiled.create_infer_request()
        self._output_names = [_public_name(out) for out in self._compiled.outputs]
        shape = self._compiled.inputs[0].get_partial_shape()
        self.max_batch: int | None = shape[0].get_length() if shape[0].is_static else None
        used = device
        if device == "AUTO":
            try:
                used = f"AUTO:{','.join(self._compiled.get_property('EXECUTION_DEVICES'))}"
            except RuntimeError:
                used = "AUTO"
        self.name = f"openvino/{used}"
        actual_hint: str | None = None
        if device in ("CPU", "GPU"):
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            actual_hint = value.to_string() if hasattr(value, "to_string") else str(value)
        if actual_hint is not None and actual_hint != hint:
            logger.warning(
                "openvino on %s runs %s, not the requested %s (the device lacks that "
                "arithmetic); weights may still be stored in fp16",
                used,
                actual_hint,
                hint,
            )
        self.info: dict[str, object] = {
            "precision_hint_requested": hint,
            "precision_hint_used": actual_hint,
            "threads": threads,
            "openvino_version": ov.__version__,
        }
        logger.info("openvino compiled on %s (inference precision %s)", used, actual_hint)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named float32 outputs for one batch, copied out of OpenVINO's memory."""
        if self._request is None:
            raise BackendUnavailableError("openvino backend was closed; load the detector again")
        self._request.infer({0: inputs}, share_inputs=False)
        return {
            name: np.array(self._request.get_output_tensor(i).data, dtype=np.float32, copy=True)
            for i, name in enumerate(self._output_names)
        }

    def close(self) -> None:
        """Drop the infer request, compiled model and Core."""
        self._request = None
        self._compiled = None
        self._core = None


def _public_name(output: Any) -> str:
    """The graph's own output name ("score", "embedding", ...) among a tensor's names.

    OpenVINO may give one tensor several names (e.g. '/Squeeze_output_0' and 'score'); the
    exported names are plain identifiers, so prefer those.
    """
    names = sorted(output.get_names())
    plain = [name for name in names if name.isidentifier()]
    return plain[0] if plain else str(output.get_any_name())
