"""A BatchScorer that takes 150 ms per image, so a test can kill a Ray worker mid-job.

Imported by Ray workers by name (tests/unit is on their PYTHONPATH in test_cluster_ray.py).
"""

from __future__ import annotations

import time
from typing import Any

from edgead.cluster.batch import BatchScorer

DELAY_S = 0.15


class SlowScorer(BatchScorer):
    """BatchScorer plus a fixed delay per image (scores unchanged)."""

    def score_path(self, path: str) -> dict[str, Any]:
        time.sleep(DELAY_S)
        return super().score_path(path)
