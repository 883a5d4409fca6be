"""torch module -> ONNX bytes -> OpenVINO IR bytes. Export side (torch, onnx, openvino)."""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import BackendUnavailableError, ExportError
from edgead.export.onnx_passes import fold_pads_into_convs, uint8_inputs_not_cast

logger = logging.getLogger(__name__)

OPSET = 17


def export_onnx(
    module: Any,
    example_input: np.ndarray,
    input_name: str,
    output_names: tuple[str, ...],
    dynamic_batch: bool = True,
) -> bytes:
    """ONNX graph (opset 17, static H/W) of `module`, checked with `onnx.checker(full_check=True)`.

    Uses the TorchScript exporter (`dynamo=False`): it produces plain opset-17 graphs that ONNX
    Runtime, OpenVINO and TensorRT's parser all accept, and handles the uint8 input cast without
    extra guards. Only the batch axis is dynamic (when `dynamic_batch`). Explicit zero `Pad`
    nodes in front of convolutions are folded into the convolutions' own (asymmetric) pads
    (`onnx_passes.fold_pads_into_convs`).

    Args:
        module: torch.nn.Module; forward(input) -> tuple of tensors, one per output name.
        example_input: uint8 (B, H, W, 3) images or float32 (B, D) rows used for tracing.

    Raises:
        ExportError: tracing or the ONNX checker fails.
    """
    import onnx
    import torch
    from torch.jit._trace import TracerWarning

    module = module.eval()
    example = torch.from_numpy(np.ascontiguousarray(example_input))
    axes = {name: {0: "batch"} for name in (input_name, *output_names)} if dynamic_batch else None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            # Static H, W are intended: shape-to-int tracer warnings and slice folding notes.
            warnings.filterwarnings("ignore", category=TracerWarning)
            warnings.filterwarnings("ignore", message=".*Constant folding.*")
            torch.onnx.export(
                module,
                (example,),
                buf,  # type: ignore[arg-type]  # a file-like object is accepted
                opset_version=OPSET,
                dynamo=False,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same to the user
        raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    model = onnx.load_from_string(buf.getvalue())
    if fold_pads_into_convs(model):
        model.graph.ClearField("value_info")  # shapes are re-derived by the checker and runtimes
    not_cast = uint8_inputs_not_cast(model)
    if not_cast:
        raise ExportError(
            f"uint8 graph input read by ops other than Cast ({'; '.join(not_cast)}); "
            "TensorRT needs the input cast to float first: cast before any "
            "permute/reshape in the module's forward"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and shape-inference errors
        raise ExportError(f"the exported ONNX graph fails onnx.checker: {exc}") from exc
    return bytes(model.SerializeToString())


def export_openvino_ir(onnx_model: bytes, fp16: bool) -> tuple[bytes, bytes]:
    """(model.xml, model.bin) bytes converted from `onnx_model`; weights stored fp16 when `fp16`.

    Raises:
        BackendUnavailableError: openvino is not installed.
        ExportError: the conversion fails.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            "export to OpenVINO needs openvino; install edgead[openvino]"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="edgead-ov-") as tmp:
        src = Path(tmp) / "model.onnx"
        src.write_bytes(onnx_model)
        try:
            model = ov.convert_model(str(src))
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=fp16)
        except Exception as exc:  # openvino raises RuntimeError/OpConversionFailure
            raise ExportError(f"openvino could not convert the ONNX graph: {exc}") from exc
        return (Path(tmp) / "model.xml").read_bytes(), (Path(tmp) / "model.bin").read_bytes()


def run_torch(
    module: Any, inputs: np.ndarray, output_names: tuple[str, ...], batch_size: int = 8
) -> dict[str, np.ndarray]:
    """Reference outputs of the torch module: output name -> float32 numpy (B, ...)."""
    import torch

    parts: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size])))
            if not isinstance(out, (tuple, list)):
                out = (out,)
            if len(out) != len(output_names):
                raise ExportError(
                    f"the export module returned {len(out)} outputs; the spec names "
                    f"{len(output_names)} ({list(output_names)})"
                )
            for name, tensor in zip(output_names, out, strict=True):
                parts[name].append(tensor.detach().float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
