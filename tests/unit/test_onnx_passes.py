"""The ONNX clean-up pass that folds TensorFlow-"same" Pads into convolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgead.errors import ExportError  # noqa: E402
from edgead.export.graphs import export_onnx  # noqa: E402
from edgead.export.onnx_passes import fold_pads_into_convs, uint8_inputs_not_cast  # noqa: E402
from edgead.models.backbones.efficientnet_lite import Conv2dSame  # noqa: E402


class _SamePadNet(torch.nn.Module):
    """uint8 NHWC -> two stride-2 "same" convs (asymmetric pads) and a padded pool branch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = Conv2dSame(3, 8, 3, 2, 0, bias=False)
        self.conv2 = Conv2dSame(8, 8, 5, 2, 0, groups=8, bias=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().permute(0, 3, 1, 2) / 255.0
        y = self.conv2(torch.relu(self.conv1(x)))
        # A non-zero Pad feeding a pool must survive the pass.
        z = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(y, (1, 1, 1, 1), value=1.0), 3)
        return y, z


def _run(model_bytes: bytes, images: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})


def test_pads_folded_into_convs_with_identical_outputs() -> None:
    module = _SamePadNet().eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    folded = export_onnx(module, images[:1], "images", ("y", "z"))
    ops = [node.op_type for node in onnx.load_from_string(folded).graph.node]
    assert ops.count("Pad") == 1  # only the value-1 Pad before the pool is left
    with torch.no_grad():
        want = [t.numpy() for t in module(torch.from_numpy(images))]
    for got, ref in zip(_run(folded, images), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    convs = [n for n in onnx.load_from_string(folded).graph.node if n.op_type == "Conv"]
    pads = [list(next(a.ints for a in n.attribute if a.name == "pads")) for n in convs]
    assert pads == [[0, 0, 1, 1], [1, 1, 2, 2]]  # asymmetric: more at the bottom / right


def test_fold_is_a_no_op_without_foldable_pads() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
    )
    model = onnx.helper.make_model(graph)
    before = model.SerializeToString()
    assert fold_pads_into_convs(model) == 0
    assert model.SerializeToString() == before


class _PermuteFirst(torch.nn.Module):
    """Transposes the uint8 input before casting it: TensorRT cannot import that."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        return (images.permute(0, 3, 1, 2).float().mean(dim=(1, 2, 3)),)


def test_uint8_input_must_feed_a_cast() -> None:
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ExportError, match="TensorRT"):
        export_onnx(_PermuteFirst(), images, "images", ("score",))
    good = export_onnx(_SamePadNet().eval(), images, "images", ("y", "z"))
    assert uint8_inputs_not_cast(onnx.load_from_string(good)) == []
