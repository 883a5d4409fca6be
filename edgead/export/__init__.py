"""torch -> ONNX / OpenVINO IR / TensorRT build settings; parity; bundle writing.

from edgead.export import export_run
manifest = export_run("runs/mpdd", target="openvino", precision="fp32", out="model.edgead")
"""

from edgead.export.exporter import TARGETS, ExportConfig, export_detector, export_run
from edgead.export.index import build_index_member

__all__ = ["TARGETS", "ExportConfig", "build_index_member", "export_detector", "export_run"]
