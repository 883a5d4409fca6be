"""Detector families (torch / scikit-learn side). Build detectors with `create_detector`."""

from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    ScoreOutput,
    create_detector,
    get_detector_class,
    list_detectors,
    register_detector,
)

__all__ = [
    "BaseDetector",
    "ExportSpec",
    "ScoreOutput",
    "create_detector",
    "get_detector_class",
    "list_detectors",
    "register_detector",
]
