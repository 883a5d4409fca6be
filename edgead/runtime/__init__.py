"""The device runtime: load a bundle and score frames or rows. Imports no torch.

from edgead.runtime import Detector
det = Detector.load("model.edgead", device="auto")
result = det(frame_bgr)
"""

from edgead.runtime.detector import Detector, Result, RowScores

__all__ = ["Detector", "Result", "RowScores"]
