"""Native TensorRT backend: builds an engine from the bundle's ONNX graph on the device.

The bundle carries `model.onnx` and the build settings (`manifest.build["tensorrt"]`:
precision, workspace, optimisation profile). The engine is built on the device the first time
(or by `edgead build-engine MODEL.edgead`) and cached next to the bundle in
`MODEL.edgead.engines/`, keyed by GPU name, TensorRT version, precision and the bundle's sha256,
so an engine is never used with another GPU, TensorRT or bundle. Device memory is handled with
NVIDIA's cuda-python (`cuda.bindings.runtime` from 12.6.1 on, `cuda.cudart` before); torch is
not used. An engine is checked against the bundle's reference outputs before it is cached
(`build_checked_engine`), so a wrong engine never serves.

This module imports `tensorrt` and `cuda.bindings` only inside functions; without them (or
without a GPU) every entry point raises BackendUnavailableError and the Detector falls back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgead._io import write_bytes_atomic, write_json_atomic
from edgead.errors import BackendUnavailableError

if TYPE_CHECKING:
    from edgead.bundle import Bundle
    from edgead.runtime.reference import ReferenceCheck

logger = logging.getLogger(__name__)

DEFAULT_BUILD = {"precision": "fp32", "workspace_mib": 1024, "max_batch": 8}


#: TensorRT major versions this backend is written for (the TensorRT 10 Python API:
#: named I/O tensors, execute_async_v3, explicit batch only).
TRT_MAJOR_MIN = 10


def import_cudart() -> Any:
    """cuda-python's runtime module in the layout of the installed version.

    cuda-python >= 12.6.1 (and 13) has `cuda.bindings.runtime`; 12.0 - 12.6.0 only
    `cuda.cudart` (the same API; 12.6.1 - 12.x keep it as a deprecated forwarder, 13 removed it).
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python 12.0 - 12.6.0
    return cudart


def _import_trt() -> tuple[Any, Any]:
    """(tensorrt, cuda-python runtime), or BackendUnavailableError with an install hint."""
    try:
        import tensorrt as trt

        cudart = import_cudart()
    except ImportError as exc:
        raise BackendUnavailableError(
            f"native TensorRT needs the tensorrt and cuda-python packages ({exc}); install "
            "`edgead[tensorrt]` on a machine with an NVIDIA GPU (Jetson: TensorRT comes with "
            "JetPack 6), or use device='cpu'"
        ) from exc
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < TRT_MAJOR_MIN:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} is installed; edgead's TensorRT backend needs "
            f"TensorRT >= {TRT_MAJOR_MIN} (JetPack 6 on Jetson, `pip install tensorrt` on x86). "
            "ONNX Runtime's TensorRT provider or CUDA provider may still work"
        )
    return trt, cudart


def _native_handle(obj: Any) -> int:
    """The integer handle of a cuda-python object (a stream) for TensorRT's `stream_handle`.

    cuda-python 12.9.1+ recommends `cuda.bindings.utils.get_cuda_native_handle`; older versions
    only offer `int(obj)`.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda.bindings call result `(err, *values)`; raise on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA call {what} failed with error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name(cudart: Any, device: int = 0) -> str:
    """Name of CUDA device `device`, e.g. 'NVIDIA H200'."""
    props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).split("\x00")[0].strip()


@dataclass(frozen=True)
class EngineKey:
    """What an engine is only valid for."""

    gpu: str
    trt_version: str
    precision: str
    bundle_sha256: str

    def filename(self) -> str:
        """A file-system safe cache file name."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-")
        return f"{gpu}_trt{self.trt_version}_{self.precision}_{self.bundle_sha256[:16]}.engine"


def engine_cache_dir(bundle_path: Path) -> Path:
    """Directory next to the bundle where engines are cached: `MODEL.edgead.engines/`."""
    return bundle_path.with_name(bundle_path.name + ".engines")


def build_engine_bytes(
    onnx_model: bytes, settings: dict[str, Any], input_shape: tuple[int, ...]
) -> bytes:
    """Serialized TensorRT engine built from `onnx_model` with `settings`.

    Args:
        onnx_model: bytes of model.onnx.
        settings: {"precision": "fp32"|"fp16", "workspace_mib": int, "max_batch": int}.
        input_shape: graph input shape with the batch axis first (its value is ignored; the
            optimisation profile spans batch 1 .. max_batch, optimised for 1).

    Raises:
        BackendUnavailableError: TensorRT is absent, cannot parse the graph or build the engine.
    """
    trt, _ = _import_trt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT's ONNX parser rejected model.onnx: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_mib"]) << 20)
    precision = settings.get("precision", "fp32")
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 (on by default on Ampere and newer) rounds to a 10-bit mantissa: fp32 would not be
        # fp32 and would miss the bundle's fp32 reference tolerance.
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            logger.warning("this GPU has no fast fp16; TensorRT builds fp16 kernels anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise BackendUnavailableError(
            f"TensorRT precision {precision!r} is not supported by edgead bundles (fp32, fp16); "
            "int8 needs a calibration set, which export does not provide yet"
        )
    profile = builder.create_optimization_profile()
    tensor = network.get_input(0)
    rest = tuple(int(d) for d in input_shape[1:])
    max_batch = int(settings.get("max_batch", 1))
    profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(
            "TensorRT failed to build an engine (see the TensorRT log above)"
        )
    return bytes(serialized)


def load_or_build_engine(
    bundle_path: Path,
    bundle_sha256: str,
    onnx_model: bytes,
    settings: dict[str, Any],
    input_shape: tuple[int, ...],
    rebuild: bool = False,
    check: Callable[[bytes], object] | None = None,
) -> tuple[bytes, Path]:
    """(engine bytes, cache path): the cached engine for this GPU, TensorRT, precision and bundle.

    The cache file's sha256 is kept in a `.json` beside it and checked before use; a damaged
    cache entry is rebuilt (and that is logged). A newly built engine is passed to `check`
    first (the bundle's reference check, see `reference_check_for`); when it raises, nothing
    is cached and the error propagates.
    """
    trt, cudart = _import_trt()
    key = EngineKey(
        gpu=gpu_name(cudart),
        trt_version=str(trt.__version__),
        precision=str(settings.get("precision", "fp32")),
        bundle_sha256=bundle_sha256,
    )
    path = engine_cache_dir(bundle_path) / key.filename()
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file() and not rebuild:
        data = path.read_bytes()
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") == hashlib.sha256(data).hexdigest():
            logger.info("using cached TensorRT engine %s", path)
            return data, path
        logger.warning("cached TensorRT engine %s fails its sha256 check; rebuilding it", path)
    logger.info(
        "building TensorRT engine for %s (TensorRT %s, %s); this takes a while",
        key.gpu,
        key.trt_version,
        key.precision,
    )
    data = build_engine_bytes(onnx_model, settings, input_shape)
    if check is not None:
        check(data)  # raises on a wrong engine: it is never cached
    write_bytes_atomic(path, data)
    write_json_atomic(
        meta_path,
        {"sha256": hashlib.sha256(data).hexdigest(), **key.__dict__, "settings": settings},
    )
    return data, path


class TensorRtBackend:
    """A deserialized TensorRT engine with one execution context and one CUDA stream.

    Args:
        engine: serialized engine bytes (from `load_or_build_engine`).
        name_suffix: precision, shown in `name`.
    """

    def __init__(self, engine: bytes, precision: str = "fp32") -> None:
        trt, cudart = _import_trt()
        self._trt, self._cudart = trt, cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine)
        if self._engine is None:
            raise BackendUnavailableError(
                "TensorRT could not deserialize the engine; rebuild it with "
                "`edgead build-engine MODEL.edgead --rebuild`"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self._outputs = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
        ]
        if len(self._inputs) != 1:
            raise BackendUnavailableError(
                f"engine has inputs {self._inputs}; edgead graphs have one"
            )
        profile_max = self._engine.get_tensor_profile_shape(self._inputs[0], 0)[2]
        self.max_batch: int | None = int(profile_max[0])
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.name = f"tensorrt/{gpu_name(cudart)}"
        self.info: dict[str, object] = {
            "tensorrt_version": str(trt.__version__),
            "precision": precision,
        }

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device allocation of at least `nbytes` for tensor `name`, reused between calls."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named float32 outputs for one batch: copy in, execute_async_v3, copy out, synchronise."""
        trt, cudart = self._trt, self._cudart
        if self._context is None:
            raise BackendUnavailableError("TensorRT backend was closed; load the detector again")
        host_in = np.ascontiguousarray(inputs)
        name_in = self._inputs[0]
        self._context.set_input_shape(name_in, host_in.shape)
        d_in = self._device_buffer(name_in, host_in.nbytes)
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(
            cudart.cudaMemcpyAsync(
                d_in, host_in.ctypes.data, host_in.nbytes, kind_h2d, self._stream
            ),
            "cudaMemcpyAsync(H2D)",
        )
        self._context.set_tensor_address(name_in, d_in)
        host_out: dict[str, np.ndarray] = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            host_out[name] = np.empty(shape, dtype=dtype)
            self._context.set_tensor_address(name, self._device_buffer(name, host_out[name].nbytes))
        if not self._context.execute_async_v3(_native_handle(self._stream)):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed")
        for name, host in host_out.items():
            _check(
                cudart.cudaMemcpyAsync(
                    host.ctypes.data, self._buffers[name][0], host.nbytes, kind_d2h, self._stream
                ),
                "cudaMemcpyAsync(D2H)",
            )
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: host.astype(np.float32, copy=False) for name, host in host_out.items()}

    def close(self) -> None:
        """Free device buffers and the stream, drop the engine."""
        if self._context is None:
            return
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = None
        self._engine = None


def build_settings(bundle: Bundle) -> tuple[dict[str, Any], tuple[int, ...]]:
    """(engine build settings, graph input shape with batch 1) for a bundle."""
    m = bundle.manifest
    settings = {**DEFAULT_BUILD, "precision": m.precision, **m.build.get("tensorrt", {})}
    shape = tuple(1 if d is None else int(d) for d in m.input.shape)
    return settings, shape


def build_checked_engine(
    bundle: Bundle, rebuild: bool = False
) -> tuple[bytes, Path, ReferenceCheck | None]:
    """(engine bytes, cache path, reference check of a newly built engine or None).

    A newly built engine runs the bundle's reference inputs before it is cached
    (`edgead.runtime.reference.check_reference`); one whose outputs differ beyond the manifest's
    tolerance raises ReferenceMismatchError and is not cached. Bundles without reference
    outputs (older exports) are built unchecked, with a warning.
    """
    from edgead.runtime.reference import check_reference, has_reference

    settings, shape = build_settings(bundle)
    checks: list[ReferenceCheck] = []

    def check(engine: bytes) -> None:
        if not has_reference(bundle.manifest):
            logger.warning(
                "bundle %s carries no reference outputs: the new engine is cached unchecked; "
                "re-export the bundle with this edgead to check engines",
                bundle.path,
            )
            return
        backend = TensorRtBackend(engine, precision=str(settings["precision"]))
        try:
            checks.append(check_reference(bundle, backend))
        finally:
            backend.close()

    engine, path = load_or_build_engine(
        bundle.path,
        bundle.sha256,
        bundle.member(bundle.manifest.graphs["onnx"]),
        settings,
        shape,
        rebuild=rebuild,
        check=check,
    )
    return engine, path, (checks[0] if checks else None)
