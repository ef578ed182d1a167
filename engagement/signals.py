"""What engagement announces to the apps built on it (they connect in their AppConfig.ready).

engagement imports no app above it: training, for one, refreshes its precomputed lists
when a fold has changed customers' engagement, by listening here.
"""

from django.dispatch import Signal

# Sent after a fold's transaction commits, when it folded events:
# ``result`` is the FoldResult (events (after_event_id, watermark], and whether it was full).
engagement_folded = Signal()
