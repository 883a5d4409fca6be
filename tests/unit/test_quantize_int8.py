"""int8 quantization follows fp32: ReLU6 fused into its Conv's quantization range, and zero-padded
average pools kept out of OpenVINO's int8 rewrite (`edgead.export.quantize`).

Every OpenVINO run here states its precision (INFERENCE_PRECISION_HINT f32).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from torch import nn

from edgead.export.graphs import export_onnx
from edgead.export.quantize import (
    affine_input_as_conv,
    input_nodes,
    pools_as_convs,
    quantize_onnx_int8,
)

ort = pytest.importorskip("onnxruntime")

SIZE = 32


class _PoolNet(nn.Module):
    """uint8 (B, 32, 32, 3) -> ("features",) (B, 64, 24): a PatchCore-like tail in miniature.

    Conv + ReLU6 blocks whose pre-activations spread far wider than ReLU6's 0..6 (as BN-folded
    efficientnet_lite0's do: -70..80), a linear projection with a residual Add, then the 3x3
    zero-padded average pool (count_include_pad) PatchCore smooths its features with.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.expand = nn.Conv2d(16, 32, 1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.project = nn.Conv2d(32, 24, 1)
        self.skip = nn.Conv2d(16, 24, 1)
        self.act = nn.ReLU6()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        with torch.no_grad():
            for conv in (self.stem, self.expand, self.depthwise):
                conv.weight.mul_(40.0)  # pre-activations of tens, most clipped by ReLU6
                conv.bias.uniform_(-60.0, 3.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = images.float().permute(0, 3, 1, 2) * (1 / 127.5) + torch.full((1, 3, 1, 1), -1.0)
        x = self.act(self.stem(x))
        y = self.project(self.act(self.depthwise(self.act(self.expand(x))))) + self.skip(x)
        feats = self.pool(y)
        return (feats.flatten(2).transpose(1, 2).contiguous(),)


def _images(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 32, 32, 3): smooth random blobs (natural-ish statistics, not white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float32)
    up = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    return np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fp32_graph() -> bytes:
    return export_onnx(
        _PoolNet().eval(), np.zeros((1, SIZE, SIZE, 3), np.uint8), "images", ("features",)
    )


def _ort(model: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"images": x[i : i + 1]})[0] for i in range(len(x))])


def _openvino_f32(model: bytes, x: np.ndarray) -> np.ndarray:
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model=model, weights=None),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
    )
    request = compiled.create_infer_request()
    outs = [np.array(request.infer({0: x[i : i + 1]})[compiled.outputs[0]]) for i in range(len(x))]
    return np.concatenate(outs)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_pools_as_convs_computes_the_same_average(fp32_graph: bytes) -> None:
    rewritten, names = pools_as_convs(fp32_graph)
    assert len(names) == 1
    assert "AveragePool" not in {n.op_type for n in onnx.load_from_string(rewritten).graph.node}
    x = _images(3, seed=1)
    want = _ort(fp32_graph, x)
    np.testing.assert_allclose(_ort(rewritten, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_openvino_f32(rewritten, x), want, rtol=1e-4, atol=1e-4)


def test_int8_follows_fp32_on_onnxruntime_and_openvino(fp32_graph: bytes) -> None:
    """Correlation of int8 with fp32 features >= 0.99 on both runtimes (OpenVINO at f32 hint).

    Measured 0.999 on both; without `pools_as_convs` OpenVINO gives 0.71 here (the border
    outputs of the pool shifted by zero_point * scale * padded / 9).
    """
    calibration, test = _images(24, seed=2), _images(6, seed=3)
    int8 = quantize_onnx_int8(fp32_graph, calibration, "images", "all")
    want = _ort(fp32_graph, test)
    assert _corr(_ort(int8, test), want) >= 0.99
    assert _corr(_openvino_f32(int8, test), want) >= 0.99


def test_relu6_is_fused_into_the_conv_quantization(fp32_graph: bytes) -> None:
    """No Clip is left and every activation scale fits ReLU6's 0..6 range or the linear
    outputs': a Conv output quantized over its pre-activation range (-300..60 here) would keep
    only a handful of levels for the 0..6 the next layer sees."""
    int8 = onnx.load_from_string(
        quantize_onnx_int8(fp32_graph, _images(24, seed=2), "images", "all")
    )
    ops = [n.op_type for n in int8.graph.node]
    assert "Clip" not in ops
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    relu_scales = [
        float(consts[n.input[1]])
        for n in int8.graph.node
        if n.op_type == "QuantizeLinear" and "Clip" in n.input[0]  # the fused ReLU6 outputs
    ]
    assert relu_scales
    assert max(relu_scales) <= 6.0 / 255 + 1e-6


def test_input_normalisation_stays_float(fp32_graph: bytes) -> None:
    """The nodes before the first Conv (cast, layout, scaling) are not quantized: ONNX Runtime
    would run a broadcast QLinearAdd over the whole image, for the same Conv input."""
    graph = onnx.load_from_string(fp32_graph).graph
    first_conv = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
    assert input_nodes(fp32_graph) == [n.name for n in graph.node[:first_conv]]
    int8 = onnx.load_from_string(
        quantize_onnx_int8(fp32_graph, _images(8, seed=2), "images", "all")
    ).graph
    assert "QLinearAdd" not in {n.op_type for n in int8.node}
    quantized_inputs = {n.input[0] for n in int8.node if n.op_type == "QuantizeLinear"}
    before_conv = {o for n in graph.node[:first_conv] for o in n.output}
    assert len(quantized_inputs & before_conv) == 1  # only the Conv's own input is quantized


def test_affine_input_as_conv_computes_the_same_normalisation(fp32_graph: bytes) -> None:
    """x * scale + shift becomes one depthwise 1x1 Conv (ONNX Runtime's fast path in int8)."""
    rewritten, names = affine_input_as_conv(fp32_graph)
    assert len(names) == 1
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert ops.index("Conv") < ops.index("Clip") and "Mul" not in ops
    x = _images(3, seed=4)
    np.testing.assert_allclose(_ort(rewritten, x), _ort(fp32_graph, x), rtol=1e-5, atol=1e-5)
    assert affine_input_as_conv(rewritten)[1] == []  # nothing left to rewrite


def test_calibration_falls_back_to_training_inputs() -> None:
    """A cross-fitted run holds nothing out: int8 calibrates on its training images instead."""
    from edgead.export.exporter import ExportData

    train = [np.full((4, 4, 3), i, np.uint8) for i in range(10)]
    picked = ExportData(normal_val=None, train_inputs=train).calibration_inputs(limit=4)
    assert picked is not None
    assert [int(p[0, 0, 0]) for p in picked] == [0, 3, 6, 9]
    held_out = np.zeros((2, 4, 4, 3), np.uint8)
    assert ExportData(normal_val=held_out, train_inputs=train).calibration_inputs() is held_out
    assert ExportData().calibration_inputs() is None
