"""Clean-up passes over an exported ONNX graph (export side; needs onnx).

The TorchScript exporter writes TensorFlow-"same" padding (EfficientNet-Lite's stride-2 convs) as
an explicit `Pad` node whose pad amounts are computed by a chain of constant ops. Neither ONNX
Runtime nor OpenVINO folds that chain into the convolution, so each such Pad copies a whole
activation tensor and, on ONNX Runtime, forces layout reorders around it. ONNX `Conv` takes
asymmetric `pads` itself, so the Pad can go.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _constant_value(name: str, model: Any, producers: dict[str, Any]) -> np.ndarray | None:
    """Value of tensor `name` when it depends on constants only (else None); evaluates its cone."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    initializers = {init.name: init for init in model.graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    graph_inputs = {inp.name for inp in model.graph.input}
    cone: list[Any] = []
    seen: set[str] = set()
    stack = [name]
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor == "" or tensor in initializers:
            continue
        seen.add(tensor)
        if tensor in graph_inputs or tensor not in producers:
            return None
        node = producers[tensor]
        if node not in cone:
            cone.append(node)
        stack.extend(node.input)
    order = {id(node): i for i, node in enumerate(model.graph.node)}
    cone.sort(key=lambda node: order[id(node)])
    used = {t for node in cone for t in node.input}
    sub = onnx.helper.make_graph(
        cone,
        "cone",
        [],
        [onnx.helper.make_empty_tensor_value_info(name)],
        [initializers[t] for t in used if t in initializers],
    )
    sub_model = onnx.helper.make_model(sub, opset_imports=model.opset_import)
    outputs: Any = ReferenceEvaluator(sub_model).run(None, {})
    return np.asarray(outputs[0])


def fold_pads_into_convs(model: Any) -> int:
    """Merge each zero `Pad` that feeds exactly one `Conv` into that Conv's `pads` (in place).

    Only Pads with constant amounts, constant mode, value 0 and no padding of the batch or
    channel axes are merged. Returns the number of Pads removed.
    """
    import onnx

    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for tensor in node.input:
            consumers[tensor].append(node)
    graph_outputs = {out.name for out in model.graph.output}
    removed = []
    for pad in model.graph.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        users = consumers[pad.output[0]]
        if mode != b"constant" or len(users) != 1 or users[0].op_type != "Conv":
            continue
        if len(pad.input) > 2 and pad.input[2]:
            fill = _constant_value(pad.input[2], model, producers)
            if fill is None or np.any(fill != 0):
                continue
        if len(pad.input) > 3 and pad.input[3]:
            continue  # the `axes` form; the exporter does not write it
        amounts = _constant_value(pad.input[1], model, producers)
        if amounts is None or amounts.size != 8:
            continue
        begin, end = amounts[:4].tolist(), amounts[4:].tolist()
        if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(begin + end) < 0:
            continue
        conv = users[0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        new = [old[0] + begin[2], old[1] + begin[3], old[2] + end[2], old[3] + end[3]]
        for attr in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attr)
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        model.graph.node.remove(pad)
    if removed:
        _drop_dead_nodes(model)
        logger.debug("folded %d Pad nodes into Conv pads", len(removed))
    return len(removed)


def uint8_inputs_not_cast(model: Any) -> list[str]:
    """Graph inputs of type uint8 read by anything but a `Cast` node ([] when all are fine).

    TensorRT accepts a uint8 network input only when it feeds a Cast directly; even a
    Transpose or Reshape on uint8 fails its ONNX import (NVIDIA/TensorRT#3985).
    """
    import onnx

    bad = []
    for graph_input in model.graph.input:
        if graph_input.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        readers = [n.op_type for n in model.graph.node if graph_input.name in n.input]
        if any(op != "Cast" for op in readers):
            bad.append(f"{graph_input.name} -> {', '.join(readers)}")
    return bad


def _drop_dead_nodes(model: Any) -> None:
    """Remove nodes whose outputs nothing reads (the constant chains that fed removed Pads)."""
    while True:
        needed = {out.name for out in model.graph.output}
        for node in model.graph.node:
            needed.update(node.input)
        dead = [n for n in model.graph.node if not any(o in needed for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {t for node in model.graph.node for t in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
