"""The device runtime: load a bundle and score frames or rows. Imports no torch.

from edgead.runtime import Detector
det = Detector.load("model.edgead", device="auto")
result = det(frame_bgr)
row_result = det.push(row, stream="pump-1")   # sensor-window bundles
"""

from edgead.runtime.detector import Detector, Result, RowScores
from edgead.runtime.series import RowResult, SeriesScores

__all__ = ["Detector", "Result", "RowResult", "RowScores", "SeriesScores"]
