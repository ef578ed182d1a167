"""What training does when engagement announces something (connected in training/apps.py)."""

from __future__ import annotations

from engagement.services.folding import FoldResult
from training.services.precompute import recommendations_refresh_after_fold


def engagement_folded_received(sender, *, result: FoldResult, **kwargs) -> None:
    """Have the lists of the customers a fold touched precomputed again (a full refold keeps every stamp)."""
    if not result.full:
        recommendations_refresh_after_fold(after_event_id=result.after_event_id, upto_event_id=result.watermark)
