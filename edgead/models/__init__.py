"""Detector families (torch / scikit-learn side). Build detectors with `create_detector`.

Importing this package imports every family module, and each registers itself
(`@register_detector`); a family whose dependencies are missing fails loudly here.
"""

from edgead.models import (  # noqa: F401, E402 - imported for their registration
    autoencoder,
    conv_ae,
    conv_ae_1d,
    csi,
    deep_svdd,
    deep_svdd_image,
    fastflow,
    gmm,
    iforest,
    kde,
    knn,
    lof,
    mae,
    mae_1d,
    ocsvm,
    padim,
    patchcore,
    vae,
    window_ae,
)
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
