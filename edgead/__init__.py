"""edgead: anomaly detectors trained on normal data, exported to edge devices.

Torch-free at import: the training side lives in `edgead.models` / `edgead.training`, the
device side in `edgead.runtime`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
