"""ONNX Runtime backend: CPU, and the CUDA / TensorRT execution providers where installed.

ONNX Runtime falls back between execution providers almost silently, so after building the
session we compare `session.get_providers()` with what was asked for and raise
BackendUnavailableError when the first provider is not the one requested; the Detector then
records the fallback and tries its next candidate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

#: device -> provider asked for first.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install it with `pip install onnxruntime` "
            "(or onnxruntime-gpu for CUDA/TensorRT)"
        ) from exc
    return onnxruntime


class OrtBackend:
    """One `onnxruntime.InferenceSession` on one execution provider, built once.

    Args:
        model: the ONNX graph (bytes of `model.onnx`).
        device: "cpu", "cuda" or "tensorrt" (the TensorRT execution provider).
        threads: intra-op threads; None leaves ONNX Runtime's default (all cores).
        fp16: let the TensorRT execution provider build fp16 kernels (ignored elsewhere).
        cache_dir: where the TensorRT execution provider caches engines (None: no cache).
        spin: let idle intra-op threads spin-wait (ONNX Runtime's default); off by default.
    """

    def __init__(
        self,
        model: bytes,
        device: str = "cpu",
        threads: int | None = None,
        fp16: bool = False,
        cache_dir: Path | None = None,
        spin: bool = False,
    ) -> None:
        ort = _import_ort()
        if device not in PROVIDERS:
            raise BackendUnavailableError(
                f"onnxruntime has no device {device!r}; use one of {sorted(PROVIDERS)}"
            )
        wanted = PROVIDERS[device]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendUnavailableError(
                f"onnxruntime offers {available}, not {wanted}; install onnxruntime-gpu "
                "(with TensorRT for the TensorRT provider) or use device='cpu'"
            )
        providers: list[Any] = []
        if device == "tensorrt":
            trt_options: dict[str, Any] = {"trt_fp16_enable": bool(fp16)}
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                trt_options.update(
                    trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir)
                )
            providers.append(("TensorrtExecutionProvider", trt_options))
        if device in ("tensorrt", "cuda"):
            providers.append("CUDAExecutionProvider")
        providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not spin:
            # The nearest-neighbour search runs right after the graph on the same cores; idle
            # ORT workers spinning there would slow it down.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise BackendUnavailableError(
                f"onnxruntime could not load the graph on {wanted}: {exc}"
            ) from exc
        used = self._session.get_providers()
        if not used or used[0] != wanted:
            raise BackendUnavailableError(
                f"onnxruntime was asked for {wanted} but uses {used}; the provider failed to "
                "initialise (see onnxruntime's log)"
            )
        self.name = f"onnxruntime/{used[0]}"
        graph_input = self._session.get_inputs()[0]
        self._input_name = graph_input.name
        batch = graph_input.shape[0] if graph_input.shape else None
        self.max_batch: int | None = batch if isinstance(batch, int) else None
        self._output_names = [o.name for o in self._session.get_outputs()]
        self.info: dict[str, object] = {
            "providers_requested": [p if isinstance(p, str) else p[0] for p in providers],
            "providers_used": used,
            "threads": threads,
            "spin": spin,
        }
        logger.info("onnxruntime session on %s (providers %s)", used[0], used)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named float32 outputs for one batch (see `Backend.run`)."""
        if self._session is None:
            raise BackendUnavailableError("onnxruntime backend was closed; load the detector again")
        values = self._session.run(self._output_names, {self._input_name: inputs})
        return {
            name: np.asarray(v, dtype=np.float32)
            for name, v in zip(self._output_names, values, strict=True)
        }

    def close(self) -> None:
        """Drop the session."""
        self._session = None
