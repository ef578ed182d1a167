"""The run page's settings-search table in a real browser, at a desktop and a phone width."""

from __future__ import annotations

import pytest

from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD
from training.models import TrainingRun

TRIED = [
    {"options": {}, "validation_ndcg": 0.0664, "best_epoch": 8, "epochs_run": 11, "seconds": 101.2},
    {"options": {"lr": 0.0015}, "validation_ndcg": 0.0651, "best_epoch": 12, "epochs_run": 15, "seconds": 131.0},
    {"options": {"embedding_l2": 0.01}, "validation_ndcg": 0.0702, "best_epoch": 9, "epochs_run": 12, "seconds": 56.1},
]


@pytest.mark.usefixtures("transactional_db")
@pytest.mark.parametrize("width", [1366, 390])
def test_the_search_table_reads_without_sideways_scrolling(browser_page, live_server, admin_user, width):
    search = {"why": "no search has run yet", "budget_seconds": 300.0, "seconds": 288.3, "chosen": {"embedding_l2": 0.01},
              "tried": TRIED, "skipped": [{"loss": "bce"}, {"negative_exponent": 0.0}]}  # fmt: skip
    run = TrainingRun.objects.create(
        triggered_by="test", status=TrainingRun.Status.SUCCEEDED,
        metrics={"search": search, "settings": {"options": search["chosen"], "searched": True}},
    )  # fmt: skip
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 860})
    log_in(page, base, admin_user.username, PASSWORD)
    page.goto(f"{base}/dashboard/runs/{run.pk}/")

    rows = page.locator("#run-search tbody tr")
    assert rows.count() == len(TRIED)
    assert "(chosen)" in rows.nth(2).inner_text()
    assert page.locator("#run-settings").inner_text().count("2 left out when the budget ran out") == 1
    screenshot(page, f"run-search-{width}")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if width >= 1024:
        assert overflow <= 0
    table_overflow = page.evaluate(
        "() => { const f = document.querySelector('#run-settings figure'); return f.scrollWidth - f.clientWidth; }"
    )
    table_right = page.evaluate("() => document.querySelector('#run-search').getBoundingClientRect().right")
    print(f"width {width}: page overflow {overflow}px (the nav's, issue 16), table overflow {table_overflow}px")
    # The table fits the screen: no sideways scrolling inside it, nothing past the viewport's edge.
    assert table_overflow <= 0 and table_right <= width
