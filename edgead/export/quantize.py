"""int8 graphs from the fp32 export, calibrated on the run's held-out normal images. Export side.

- ONNX Runtime (and TensorRT, which builds int8 engines from the same graph): static QDQ
  quantization (`onnxruntime.quantization.quantize_static`, QuantizeLinear/DequantizeLinear
  pairs, uint8 activations, per-channel int8 weights, min/max calibration) of Conv, MatMul,
  residual Add and the ReLU(6) each Conv feeds (`SCOPE_OPS`: quantizing the Conv without its
  Clip gave patch distances correlating 0.64 with fp32 on efficientnet_lite0, with it 0.96).
- Both first turn zero-padded average pools into float depthwise Convs (`pools_as_convs`):
  OpenVINO's int8 execution gets their borders wrong (docs/LATENCY.md, "Why int8 failed").
- OpenVINO: NNCF post-training quantization of the IR (`nncf.quantize`), or with accuracy control
  (`nncf.quantize_with_accuracy_control`: layers go back to float until the validation metric
  is within `max_drop` of the fp32 model's) when a validation function is given.

The in-graph search (`edgead.export.graph_index`, every node outside "/embedder/") always stays
float: calibration sees normal images only, so any quantizer on the distance path clips at the
largest *normal* distance, and every anomaly then scores the same (measured: all defective MPDD
images scored exactly 34.29 with NNCF's default scope). `scope` says what else is quantized:
"all" (every Conv and MatMul of the embedder) or "backbone" (Conv only). The exporter measures
the AUROC change of each result through the runtime and keeps it only within --max-auroc-drop.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import BackendUnavailableError, ExportError

logger = logging.getLogger(__name__)

SCOPES = ("all", "backbone")
#: Calibration images used at most (min/max statistics settle long before).
MAX_CALIBRATION = 64
#: NNCF accuracy control: at most this many rounds of reverting layers to float.
MAX_RESTORE_ITERATIONS = 6


#: Node-name prefix of the embedder inside an in-graph search module (torch's module path).
EMBEDDER_PREFIX = "/embedder/"


def _has_search(output_names: list[str]) -> bool:
    from edgead.ops.scoring import IN_GRAPH_DISTANCES

    return IN_GRAPH_DISTANCES in output_names


def search_nodes(onnx_model: bytes) -> list[str]:
    """Names of the in-graph search's nodes (kept float), [] for a graph without the search."""
    import onnx

    model = onnx.load_from_string(onnx_model)
    if not _has_search([o.name for o in model.graph.output]):
        return []
    return [n.name for n in model.graph.node if not n.name.startswith(EMBEDDER_PREFIX)]


def scopes_that_differ(onnx_model: bytes, scopes: tuple[str, ...]) -> tuple[str, ...]:
    """`scopes` without "backbone" when the embedder has no MatMul (then it equals "all")."""
    import onnx

    model = onnx.load_from_string(onnx_model)
    search = set(search_nodes(onnx_model))
    has_matmul = any(n.op_type == "MatMul" and n.name not in search for n in model.graph.node)
    return scopes if has_matmul else tuple(s for s in scopes if s != "backbone")


def _is_search_node(op: Any) -> bool:
    """Whether an OpenVINO op belongs to the in-graph search (not a parameter / constant)."""
    name = op.get_friendly_name()
    kind = op.get_type_name()
    return kind not in ("Parameter", "Constant", "Result") and not name.startswith(EMBEDDER_PREFIX)


#: Activations whose range the quantizer folds into the producing Conv's output (ReLU6 is a Clip):
#: left out, every Conv output would be quantized over its whole pre-activation range (-70..80
#: where ReLU6 keeps 0..6), leaving ~10 levels for what the next layer sees (measured on
#: efficientnet_lite0: patch distances then correlate 0.64 with fp32 instead of 0.96).
FUSED_ACTIVATIONS = ["Clip", "Relu"]
#: Op types quantized per scope (residual Adds too, so the int8 chain is not broken).
SCOPE_OPS = {
    "all": ["Conv", "MatMul", "Add", *FUSED_ACTIVATIONS],
    "backbone": ["Conv", "Add", *FUSED_ACTIVATIONS],
}


def pools_as_convs(onnx_model: bytes) -> tuple[bytes, list[str]]:
    """(graph, names of the new nodes): zero-padded AveragePools as float depthwise Convs.

    OpenVINO 2026.4's low-precision transformations move a dequantization's zero point past an
    AveragePool that counts its zero padding (PatchCore's 3x3 feature smoothing,
    `count_include_pad=1`), so every border output is off by zero_point * scale * pads / 9
    (measured: corner -7.11 for zp 128, scale 0.1; `tests/unit/test_quantize_int8.py`). A
    depthwise Conv with weights 1 / (kh * kw), zero padding and no bias computes the same
    average in float (fp32 rounding only) and is kept out of quantization, so the
    dequantization stays in front of it. Pools without padding, with `count_include_pad=0` (no
    padded zeros to get wrong) or `ceil_mode`, and pools of unknown channel count stay as they are.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_model))
    channels = {
        v.name: v.type.tensor_type.shape.dim[1].dim_value
        for v in [*model.graph.value_info, *model.graph.input]
        if len(v.type.tensor_type.shape.dim) == 4
    }
    replaced: list[str] = []
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        pads = list(attrs.get("pads", []))
        n_channels = channels.get(node.input[0], 0) if node.op_type == "AveragePool" else 0
        wanted = any(pads) and attrs.get("count_include_pad", 0) and not attrs.get("ceil_mode", 0)
        if not (n_channels and wanted):
            nodes.append(node)
            continue
        kernel = list(attrs["kernel_shape"])
        weight = np.full((n_channels, 1, *kernel), 1.0 / float(np.prod(kernel)), np.float32)
        name = f"{node.name or node.output[0]}_as_conv"
        model.graph.initializer.append(numpy_helper.from_array(weight, f"{name}_weight"))
        nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], f"{name}_weight"],
                list(node.output),
                name=name,
                kernel_shape=kernel,
                pads=pads,
                group=n_channels,
                strides=list(attrs.get("strides", [1] * len(kernel))),
            )
        )
        replaced.append(name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.ClearField("value_info")
    return model.SerializeToString(), replaced


def _constant_values(model: Any) -> dict[str, np.ndarray]:
    """Tensor name -> value of every initializer and Constant node output of `model`."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def affine_input_as_conv(onnx_model: bytes) -> tuple[bytes, list[str]]:
    """(graph, names of the new nodes): the input normalisation `x * scale + shift` (per-channel
    constants on NCHW, `UInt8Normalize`) as one float 1x1 depthwise Conv (weight scale, bias
    shift), kept out of quantization.

    In an int8 graph ONNX Runtime runs the quantized Convs in NHWC and drops the input's
    Transpose, so a separate Mul and Add broadcast a 3-vector over every pixel: 2.2 of 10.4 ms of
    efficientnet_lite0's int8 graph on one thread (0.16 ms in fp32, where they stay NCHW). As a
    Conv it takes the fast path (int8 graph 10.4 -> 7.2 ms, outputs identical on MPDD). Graphs
    without this Mul -> Add pair before the first Conv are returned unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_model))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.input]
    }
    consts = _constant_values(model)
    nodes = list(model.graph.node)
    head = nodes[: next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), 0)]
    for mul in (n for n in head if n.op_type == "Mul"):
        shape = shapes.get(mul.input[0], [])
        readers = [n for n in nodes if mul.output[0] in n.input]
        if len(shape) != 4 or not shape[1] or len(readers) != 1:
            continue
        add = readers[0]
        if add.op_type != "Add" or add.input[0] != mul.output[0]:
            continue
        if mul.input[1] not in consts or add.input[1] not in consts:
            continue
        channels = shape[1]
        try:
            scale = np.broadcast_to(consts[mul.input[1]], (1, channels, 1, 1)).reshape(channels)
            shift = np.broadcast_to(consts[add.input[1]], (1, channels, 1, 1)).reshape(channels)
        except ValueError:  # not per-channel constants
            continue
        name = f"{mul.name or mul.output[0]}_affine_as_conv"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(
                    scale.astype(np.float32).reshape(channels, 1, 1, 1), f"{name}_w"
                ),
                numpy_helper.from_array(shift.astype(np.float32), f"{name}_b"),
            ]
        )
        conv = helper.make_node(
            "Conv",
            [mul.input[0], f"{name}_w", f"{name}_b"],
            list(add.output),
            name=name,
            kernel_shape=[1, 1],
            group=channels,
        )
        rebuilt = [conv if n is mul else n for n in nodes if n is not add]
        del model.graph.node[:]
        model.graph.node.extend(rebuilt)
        model.graph.ClearField("value_info")
        return model.SerializeToString(), [name]
    return onnx_model, []


def input_nodes(onnx_model: bytes) -> list[str]:
    """Names of the nodes before the first Conv (the graph's own input normalisation: Cast,
    Transpose, Mul, Add): kept float. Quantized, ONNX Runtime runs the broadcast Add as a
    QLinearAdd over the whole image (3.1 of 11.1 ms of efficientnet_lite0's int8 graph, one
    thread); the Conv's input is quantized either way, so the outputs do not change."""
    import onnx

    names: list[str] = []
    for node in onnx.load_from_string(onnx_model).graph.node:  # topologically sorted
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


def _calibration_batches(images: np.ndarray) -> list[np.ndarray]:
    """uint8 (1, S, S, 3) batches of at most MAX_CALIBRATION images, in order."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or len(images) == 0:
        raise ExportError(
            f"int8 calibration needs uint8 (N, S, S, 3) images; got shape {images.shape}"
        )
    return [images[i : i + 1] for i in range(min(len(images), MAX_CALIBRATION))]


def quantize_onnx_int8(
    onnx_model: bytes, images: np.ndarray, input_name: str, scope: str = "all"
) -> bytes:
    """QDQ int8 ONNX graph of `onnx_model`, calibrated (min/max) on `images`.

    Args:
        onnx_model: fp32 ONNX bytes (uint8 image input).
        images: uint8 (N, S, S, 3) held-out normal images, already at the input size.
        scope: "all" quantizes Conv, MatMul, residual Adds and the ReLU(6) fused into the Conv
            before it (`SCOPE_OPS`); "backbone" all but MatMul. Zero-padded average pools become
            float depthwise Convs first (`pools_as_convs`), as for OpenVINO.

    Raises:
        ExportError: bad images or scope, or onnxruntime's quantizer fails.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if scope not in SCOPES:
        raise ExportError(f"int8 scope {scope!r} is unknown; use one of {SCOPES}")
    batches = _calibration_batches(images)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    prepared, pool_convs = pools_as_convs(onnx_model)
    prepared, affine = affine_input_as_conv(prepared)
    keep_float = search_nodes(prepared) + pool_convs + affine + input_nodes(prepared)
    with tempfile.TemporaryDirectory(prefix="edgead-qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(prepared)
        try:
            quantize_static(
                str(src),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=SCOPE_OPS[scope],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_float,
            )
        except Exception as exc:  # the quantizer raises many types; all mean the same here
            raise ExportError(f"onnxruntime static int8 quantization failed: {exc}") from exc
        logger.info("ONNX QDQ int8 (%s, %d calibration images)", scope, len(batches))
        return dst.read_bytes()


#: validate(compiled OpenVINO model, validation items in order) -> metric (higher is better),
#: for NNCF's accuracy control.
Validator = Callable[[Any, Iterable[Any]], float]


def int8_openvino_ir(onnx_model: bytes) -> tuple[bytes, bytes, list[str]]:
    """(model.xml, model.bin, nodes to keep float) of the fp32 graph NNCF quantizes: the ONNX
    graph with its zero-padded average pools as depthwise Convs (`pools_as_convs`), converted."""
    from edgead.export.graphs import export_openvino_ir

    prepared, pool_convs = pools_as_convs(onnx_model)
    xml, weights = export_openvino_ir(prepared, fp16=False)
    return xml, weights, pool_convs


def quantize_openvino_int8(
    xml: bytes,
    weights: bytes,
    images: np.ndarray,
    scope: str = "all",
    *,
    validate: Validator | None = None,
    validation_images: np.ndarray | None = None,
    max_drop: float = 0.005,
    keep_float: tuple[str, ...] | list[str] = (),
) -> tuple[bytes, bytes, dict[str, Any]]:
    """(model.xml, model.bin, report) of an NNCF int8 IR, calibrated on `images`.

    Args:
        xml, weights: the fp32 IR, from `int8_openvino_ir` (a graph with zero-padded average
            pools gives wrong borders in OpenVINO's int8 execution).
        images: uint8 (N, S, S, 3) held-out normal images at the input size.
        scope: "all" or "backbone" (MatMul nodes kept float).
        validate: metric of a compiled model on `validation_images` (higher is better); given,
            NNCF quantizes with accuracy control: quantized layers go back to float, ranked by
            how much they change the outputs, until the metric is within `max_drop` (absolute)
            of the fp32 model's. None: plain post-training quantization.
        validation_images: uint8 (N, S, S, 3), fed one by one (labels live in `validate`).
        keep_float: node names NNCF leaves float (besides the in-graph search).

    Raises:
        BackendUnavailableError: nncf or openvino is not installed (edgead[train] brings nncf).
        ExportError: NNCF fails.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            "int8 for OpenVINO needs nncf and openvino; install edgead[train,openvino]"
        ) from exc
    if scope not in SCOPES:
        raise ExportError(f"int8 scope {scope!r} is unknown; use one of {SCOPES}")
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    batches = _calibration_batches(images)
    core = ov.Core()
    model = core.read_model(model=xml, weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    search = _has_search([name for out in model.outputs for name in out.get_names()])
    ignored = nncf.IgnoredScope(
        names=[
            op.get_friendly_name()
            for op in model.get_ops()
            if (search and _is_search_node(op)) or op.get_friendly_name() in keep_float
        ],
        types=[] if scope == "all" else ["MatMul"],
        validate=False,
    )
    dataset = nncf.Dataset(batches)
    report: dict[str, Any] = {"tool": f"nncf {nncf.__version__}", "scope": scope}
    try:
        if validate is None:
            quantized = nncf.quantize(
                model, dataset, subset_size=len(batches), ignored_scope=ignored
            )
            report["method"] = "nncf.quantize (post-training, min/max)"
        else:
            quantized = nncf.quantize_with_accuracy_control(
                model,
                dataset,
                nncf.Dataset([img[None] for img in np.asarray(validation_images, np.uint8)]),
                # metric only (no per-item values): NNCF ranks layers by output changes
                lambda compiled, items: (float(validate(compiled, items)), None),
                max_drop=float(max_drop),
                drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(batches),
                ignored_scope=ignored,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=MAX_RESTORE_ITERATIONS
                ),
            )
            report["method"] = (
                f"nncf.quantize_with_accuracy_control (max_drop {max_drop}, at most "
                f"{MAX_RESTORE_ITERATIONS} layer groups reverted to float)"
            )
    except Exception as exc:  # NNCF raises many types; all mean the same to the user
        raise ExportError(f"NNCF int8 quantization failed: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="edgead-nncf-") as tmp:
        path = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(path), compress_to_fp16=False)
        logger.info("OpenVINO int8 IR (%s)", report["method"])
        return path.read_bytes(), path.with_suffix(".bin").read_bytes(), report
