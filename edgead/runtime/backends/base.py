"""The `Backend` protocol every inference engine implements, plus a numpy fake for tests.

A backend owns one compiled graph (a session, a compiled model, an engine) built once in its
constructor and reused for every call. It takes the graph's input array and returns the graph's
named outputs as float32 numpy arrays that it owns (copies, never views into engine memory).
Torch-free: engines are imported lazily inside the concrete backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from edgead.errors import BackendRuntimeError, BackendUnavailableError, EdgeadError


@runtime_checkable
class Backend(Protocol):
    """One loaded graph on one device.

    Attributes:
        name: what is really used, e.g. "onnxruntime/CPUExecutionProvider", "openvino/CPU".
        max_batch: largest batch one `run` call takes (1 for static-batch graphs); None = any.
        info: facts worth reporting (precision hint, providers asked for, engine cache path).
    """

    name: str
    max_batch: int | None
    info: dict[str, object]

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named graph outputs for one batch.

        Args:
            inputs: the graph input, uint8 (B, H, W, 3) RGB for images or float32 (B, D) rows.

        Returns:
            output name -> float32 array with batch axis B, owned by the caller.
        """
        ...

    def close(self) -> None:
        """Release the session / compiled model; the backend is unusable afterwards."""
        ...


class NumpyBackend:
    """A backend that calls a numpy function: the unit-test fake (like httpx's MockTransport).

    Args:
        fn: maps the input batch to {output name: array}.
        name: reported as `Detector.backend`.
        max_batch: largest batch per call (None = any).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], dict[str, np.ndarray]],
        name: str = "numpy/fake",
        max_batch: int | None = None,
    ) -> None:
        self._fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None = fn
        self.name = name
        self.max_batch = max_batch
        self.info: dict[str, object] = {}

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs of the wrapped function, as float32 copies."""
        if self._fn is None:
            raise BackendUnavailableError(
                f"backend {self.name} was closed; load the detector again"
            )
        return {k: np.array(v, dtype=np.float32, copy=True) for k, v in self._fn(inputs).items()}

    def close(self) -> None:
        """Drop the wrapped function."""
        self._fn = None


def check_outputs(outputs: dict[str, np.ndarray], expected: tuple[str, ...], backend: str) -> None:
    """Raise BackendUnavailableError when a backend did not return every expected output name."""
    missing = [name for name in expected if name not in outputs]
    if missing:
        raise BackendUnavailableError(
            f"backend {backend} returned outputs {sorted(outputs)}; the bundle needs "
            f"{list(expected)} "
            f"(missing {missing}); the graph member does not match the manifest, re-export "
            "the bundle"
        )


def run_batched(
    backend: Backend, inputs: np.ndarray, names: tuple[str, ...], input_name: str = "input"
) -> dict[str, np.ndarray]:
    """Named outputs for `inputs`, run in chunks of the backend's max_batch and concatenated.

    Raises:
        BackendUnavailableError: the backend did not return every name in `names`.
        BackendRuntimeError: the backend's own exception while running (ONNX Runtime's,
            OpenVINO's, TensorRT's), chained, naming the backend and `input_name`.
    """
    step = backend.max_batch or len(inputs)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(inputs), max(step, 1)):
        chunk = np.ascontiguousarray(inputs[start : start + step])
        try:
            out = backend.run(chunk)
        except EdgeadError:
            raise
        except Exception as exc:  # noqa: BLE001 - each backend raises its own types
            raise BackendRuntimeError(
                f"backend {backend.name} failed running the graph on input {input_name} given "
                f"{chunk.dtype} {chunk.shape}: {type(exc).__name__}: {str(exc)[:300]}; the graph "
                "member may not match its manifest: re-export the bundle or try another backend"
            ) from exc
        check_outputs(out, names, backend.name)
        parts.append(out)
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in names}
