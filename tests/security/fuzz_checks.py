"""schemathesis hooks for tests/security/test_fuzz_api.py (loaded by the CLI through SCHEMATHESIS_HOOKS).

``POST /api/v1/events/`` and ``PUT /api/v1/products/`` take a batch and judge each
item apart (DESIGN.md "Contracts"): valid items are stored even when others are
rejected, and only a batch whose every item is invalid is a 400. schemathesis's
``negative_data_rejection`` and ``positive_data_acceptance`` judge a request whole, so
they cannot hold these two (one invalid event in a batch of valid ones is rightly a
200), and the test turns them off for them. This check holds them instead, on every
answer: rejected indices are distinct positions of the batch, every event is counted
once (accepted, duplicate or rejected; a product named twice is stored once), and the
status is 400 exactly when every item was rejected.
"""

from __future__ import annotations

import schemathesis

BATCH_OPERATIONS = {("POST", "/api/v1/events/"), ("PUT", "/api/v1/products/")}


def _items(case) -> list | None:
    if case.operation.path == "/api/v1/events/":
        return case.body.get("events") if isinstance(case.body, dict) else None
    return case.body if isinstance(case.body, list) else None


@schemathesis.check
def every_item_of_a_batch_is_answered(ctx, response, case):
    if (case.method.upper(), case.operation.path) not in BATCH_OPERATIONS or response.status_code not in (200, 400):
        return None
    try:
        body = response.json()
    except ValueError:
        return None  # content_type_conformance judges that
    items = _items(case)
    if not isinstance(items, list) or not isinstance(body, dict) or "rejected" not in body:
        # Not a batch the view read (a wrong body): DRF's 400, judged by the schema checks.
        return None
    rejected = [r["index"] for r in body["rejected"]]
    assert len(set(rejected)) == len(rejected), f"an item is rejected twice: {rejected}"
    assert all(0 <= i < len(items) for i in rejected), f"rejected indices outside the batch: {rejected}"
    taken = len(items) - len(rejected)
    if "accepted" in body:
        counted = body["accepted"] + body["duplicates"]
        assert counted == taken, f"{len(items)} events sent, {len(rejected)} rejected, {counted} stored or duplicates"
    else:
        stored = body["created"] + body["updated"]
        assert (stored > 0) == (taken > 0) and stored <= taken, f"{taken} valid products, {stored} stored: {body}"
    expected = 400 if items and taken == 0 else 200
    assert response.status_code == expected, f"status {response.status_code}, expected {expected}: {body}"
    return True
