"""Training-time feature extraction through ONNX Runtime (CPU), checked against torch.

The backbone is frozen, so the features a detector is fitted on may come from any engine that
computes the same function. On CPUs ONNX Runtime runs EfficientNet-Lite0's depthwise convolutions
several times faster than torch's eager mode. `OrtFeatures.build` exports the module to ONNX in
memory (opset 17, dynamic batch), runs one parity check on the first real batch against torch and
is used only when the largest difference is within `PARITY_RTOL` of the largest output value;
otherwise (or when onnxruntime / the exporter fail) it returns None and the caller uses torch,
with a warning in the log.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: ONNX opset of the in-memory graph (the bundle exporter's opset).
OPSET = 17
#: largest |ORT - torch| allowed, relative to the largest |torch| output value (fp32).
PARITY_RTOL = 1e-4


class OrtFeatures:
    """Callable: uint8 (B, S, S, 3) numpy -> the module's first output as float32 numpy.

    Attributes:
        parity_rel_err: the measured max |ORT - torch| / max |torch| on the checked batch.
    """

    def __init__(self, session: Any, input_name: str) -> None:
        self._session = session
        self._input = input_name
        self.parity_rel_err = float("nan")

    @classmethod
    def build(cls, module: nn.Module, first_batch: np.ndarray) -> OrtFeatures | None:
        """An ORT runner of `module` that matches torch on `first_batch`, or None (logged).

        Args:
            module: an eval-mode module taking uint8 (B, S, S, 3) and returning a tuple whose
                first item is the features.
            first_batch: uint8 (B, S, S, 3), the batch the parity check runs on.
        """
        try:
            import onnxruntime as ort
        except ImportError:
            logger.warning("onnxruntime is not installed: features are extracted with torch")
            return None
        example = torch.from_numpy(np.ascontiguousarray(first_batch))
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    buf,
                    opset_version=OPSET,
                    dynamo=False,
                    input_names=["images"],
                    output_names=["features"],
                    dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                    do_constant_folding=True,
                )
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, torch.get_num_threads())
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                buf.getvalue(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - any exporter/ORT failure means: use torch
            logger.warning("ONNX Runtime feature path unavailable (%s); using torch", exc)
            return None
        runner = cls(session, "images")
        with torch.inference_mode():
            reference = module(example)[0].numpy()
        got = runner(first_batch)
        scale = max(float(np.abs(reference).max()), 1e-12)
        runner.parity_rel_err = float(np.abs(got - reference).max()) / scale
        if not runner.parity_rel_err <= PARITY_RTOL:
            logger.warning(
                "ONNX Runtime features differ from torch by %.3g of the largest value "
                "(tolerance %.0e); using torch",
                runner.parity_rel_err,
                PARITY_RTOL,
            )
            return None
        logger.info(
            "features through ONNX Runtime (parity with torch: %.2g relative)",
            runner.parity_rel_err,
        )
        return runner

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 features of uint8 (B, S, S, 3) images."""
        batch = np.ascontiguousarray(images, dtype=np.uint8)
        return np.asarray(self._session.run(None, {self._input: batch})[0], dtype=np.float32)
