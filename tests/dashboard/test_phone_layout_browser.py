"""Every dashboard page on a phone (390 px) and a desktop (1366 px), in a real browser (issue 16).

The shop is seeded so that a careless layout shows: product and customer ids of 60 and
more characters with no place to break a line, long product names, full pages of rows,
a served model whose Why column cites products, runs with long options and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from engagement.models import Customer, Engagement, Product, ProductDay
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD
from training.models import MerchandisingRule, ModelVersion, TrainingRun
from training.services.versions import model_version_promote

WIDTHS = [1366, 390]
PHONE = 390
N_PRODUCTS = 40
N_CUSTOMERS = 24
ENGAGED_BY_THE_BUSIEST = 30  # more than a history page (25): the pagination shows too
CATEGORIES = ["outerwear_and_coats_womens", "knitwear_and_cardigans_mens", "footwear_boots_unisex"]
PROGRESS = {
    "phase": "training", "epoch": 7, "epochs": 30, "step": 812, "steps": 1250,
    "loss": 0.4183, "eta_seconds": 1875.4, "validation_ndcg": 0.0712,
}  # fmt: skip
HISTORY = [{"epoch": e, "loss": 0.9 - e * 0.02, "validation_ndcg@10": 0.02 + e * 0.003} for e in range(1, 25)]
TRIED = [
    {"options": {}, "validation_ndcg": 0.0664, "best_epoch": 8, "epochs_run": 11, "seconds": 101.2},
    {"options": {"embedding_l2": 0.01, "negative_exponent": 0.75, "learning_rate": 0.0015, "customer_vector": "items"},
     "validation_ndcg": 0.0702, "best_epoch": 9, "epochs_run": 12, "seconds": 56.1},
    {"options": {"loss": "sampled_softmax", "negatives_per_positive": 64}, "validation_ndcg": 0.0651,
     "best_epoch": 12, "epochs_run": 15, "seconds": 131.0},
]  # fmt: skip
METRICS = {
    "model": {"full": {"ndcg@10": 0.1512, "hr@10": 0.2871, "recall@20": 0.3902},
              "sampled": {"ndcg@10": 0.6123, "hr@10": 0.8012}},
    "popularity": {"full": {"ndcg@10": 0.0874, "hr@10": 0.1633, "recall@20": 0.2411},
                   "sampled": {"ndcg@10": 0.5012, "hr@10": 0.7021}},
    "champion": {"version": 3, "full": {"ndcg@10": 0.1433, "hr@10": 0.2702, "recall@20": 0.3788}},
    "gate": {"promote": True, "reason": "Full-ranking NDCG@10 0.1512 beats popularity's 0.0874 and is not worse "
                                        "than the serving model's 0.1433 (version 3)."},
    "training": {"seconds": 151.3, "best_epoch": 8, "epochs_run": 11, "stopped_early": True, "device": "cpu",
                 "refit": {"epochs": 8, "rows": 99057, "seconds": 61.4}},
    "blend": {"chosen": {"weight": 0.35, "decay": 0.02}, "tried": [{}, {}, {}, {}], "seconds": 4.2},
    "data": {"customers": 182_004, "products": 12_519, "pairs": 2_410_377, "test_customers": 18_200},
    "search": {"why": "no search has run yet", "budget_seconds": 300.0, "seconds": 288.3,
               "chosen": TRIED[1]["options"], "tried": TRIED, "skipped": [{"loss": "bce"}]},
    "settings": {"options": TRIED[1]["options"], "searched": True},
}  # fmt: skip
# A worker's error as it is stored: a traceback's last lines, one of them a long path.
ERROR = (
    "Traceback (most recent call last):\n"
    '  File "/srv/recsite/releases/2026-11-28T09_14_03Z/training/services/runs.py", line 412, in run_train\n'
    "OSError: [Errno 28] No space left on device: "
    "'/srv/recsite/var/models/version_0000000042_candidate_8f3c2a1d9e7b4c6f0a1b2c3d4e5f6a7b.pt.tmp'"
)


def _product_id(i: int) -> str:
    # Underscores only: nowhere a browser may break the line unless the page lets it.
    return f"AW26_HERITAGE_WOOL_BLEND_OVERCOAT_CHARCOAL_MELANGE_XL_{i:06d}"


def _customer_id(i: int) -> str:
    return f"loyalty_member_eu_west_storefront_2026_{i:08d}"


@dataclass(frozen=True)
class Shop:
    customer: str
    product: str
    ended_run: int
    failed_run: int
    in_flight_run: int


@pytest.fixture
def shop(transactional_db, make_version) -> Shop:
    """A shop with long ids and full pages, a promoted model, and runs in every state."""
    now = timezone.now()
    products = Product.objects.bulk_create(
        Product(
            external_id=_product_id(i), category=CATEGORIES[i % len(CATEGORIES)], price=Decimal("249.00"),
            name=f"Heritage wool-blend double-breasted overcoat with detachable hood, charcoal melange, size XL ({i})",
        )
        for i in range(N_PRODUCTS)
    )  # fmt: skip
    customers = Customer.objects.bulk_create(Customer(external_id=_customer_id(i)) for i in range(N_CUSTOMERS))
    busiest = customers[0]
    engaged = [(busiest, product) for product in products[:ENGAGED_BY_THE_BUSIEST]]
    engaged += [(c, products[(i * 3 + k) % N_PRODUCTS]) for i, c in enumerate(customers[1:], 1) for k in range(8)]
    Engagement.objects.bulk_create(
        Engagement(
            customer=customer, product=product, hover_ms_total=4_200 + n * 10, dwell_ms_total=61_500 + n * 1000,
            clicks=1 + n % 5, event_count=3 + n % 9, last_event_at=now - timedelta(hours=n % 48),
            hover_decayed=0.2, dwell_decayed=0.5, clicks_decayed=1.0, score=Decimal("0.500") + Decimal(n % 400) / 1000,
        )
        for n, (customer, product) in enumerate(engaged)
    )  # fmt: skip
    today = now.date()
    ProductDay.objects.bulk_create(
        ProductDay(product=product, day=today - timedelta(days=d), events=1_000 + (i * 37 + d * 11) % 900,
                   clicks=100 + (i + d) % 80, dwell_ms=9_000_000 + d * 1000, hover_ms=700_000)
        for i, product in enumerate(products)
        for d in range(90)
    )  # fmt: skip

    for i in range(14):  # more than fit on a phone's screen, some with a version
        old = TrainingRun.objects.create(
            status=TrainingRun.Status.REJECTED if i % 2 else TrainingRun.Status.SUCCEEDED,
            triggered_by="schedule:nightly-retrain" if i % 3 else "user:merchandising.lead@example-retailer.co.uk",
            started_at=now - timedelta(days=30 - i, minutes=14), finished_at=now - timedelta(days=30 - i),
            history=HISTORY[:5], metrics={k: METRICS[k] for k in ("model", "popularity", "champion", "gate")},
        )  # fmt: skip
        if not i % 2:
            ModelVersion.objects.create(training_run=old, artifact_path="none.pt", sha256="0" * 64,
                                        status=ModelVersion.Status.RETIRED, metrics=old.metrics)  # fmt: skip
    failed = TrainingRun.objects.create(
        status=TrainingRun.Status.FAILED, triggered_by="schedule:nightly-retrain", error=ERROR,
        started_at=now - timedelta(days=1, minutes=3), finished_at=now - timedelta(days=1), progress=PROGRESS,
    )  # fmt: skip
    ended = TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, triggered_by="user:merchandising.lead@example-retailer.co.uk",
        started_at=now - timedelta(hours=2, minutes=31), finished_at=now - timedelta(hours=2), progress=PROGRESS,
        history=HISTORY, metrics=METRICS, options={"search": True},
    )  # fmt: skip
    in_flight = TrainingRun.objects.create(triggered_by="user:merchandising.lead@example-retailer.co.uk")
    version = make_version(
        customer_ids=[c.external_id for c in customers], product_ids=[p.external_id for p in products], seed=3,
        training_run=ended, metrics=METRICS,
    )  # fmt: skip
    model_version_promote(version_id=version.pk, actor="test")
    return Shop(customer=busiest.external_id, product=products[0].external_id, ended_run=ended.pk,
                failed_run=failed.pk, in_flight_run=in_flight.pk)  # fmt: skip


# What the browser shows of the page's width and of each table in <main>.
MEASURE = """
() => {
  const doc = document.documentElement;
  const tables = [...document.querySelectorAll('main table')].map(table => {
    const box = table.parentElement;
    return {
      table: table.id || box.closest('[id]')?.id,
      overflowX: getComputedStyle(box).overflowX,
      boxRight: Math.round(box.getBoundingClientRect().right),
      scrollsInside: box.scrollWidth - box.clientWidth,
    };
  });
  return {overflow: doc.scrollWidth - doc.clientWidth, tables};
}
"""


def _visit(page, url: str, *, ready: str | None = None, status: int = 200) -> dict:
    response = page.goto(url)
    assert response.status == status, url
    page.locator(ready or "main h1").first.wait_for()
    return page.evaluate(MEASURE)


def _every_page(page, base: str, shop: Shop, username: str, width: int):
    """Visit each page as an admin (who sees every control); yield its name and measurements."""

    def named(name: str, measured: dict) -> tuple[str, dict]:
        screenshot(page, f"phone-layout-{name}-{width}")
        return name, measured

    yield named("login", _visit(page, f"{base}{reverse('login')}"))
    log_in(page, base, username, PASSWORD)
    yield named("overview", _visit(page, f"{base}{reverse('dashboard:overview')}", ready="#events-chart svg"))
    yield named("runs", _visit(page, f"{base}{reverse('dashboard:run_list')}", ready="#runs"))
    yield named("retrain", _visit(page, f"{base}{reverse('dashboard:run_retrain')}", ready="#retrain-confirm"))
    in_flight = f"{base}{reverse('dashboard:run_detail', args=[shop.in_flight_run])}"
    yield named("run-queued", _visit(page, in_flight, ready="#run-status:text-is('queued')"))
    TrainingRun.objects.filter(pk=shop.in_flight_run).update(
        status=TrainingRun.Status.RUNNING, started_at=timezone.now() - timedelta(minutes=41),
        heartbeat_at=timezone.now(), progress=PROGRESS, history=HISTORY[:6],
    )  # fmt: skip
    yield named("run-running", _visit(page, in_flight, ready="#run-eta"))
    ended = f"{base}{reverse('dashboard:run_detail', args=[shop.ended_run])}"
    yield named("run-ended", _visit(page, ended, ready="#run-search"))
    failed = f"{base}{reverse('dashboard:run_detail', args=[shop.failed_run])}"
    yield named("run-failed", _visit(page, failed, ready="#run-error"))
    customers = f"{base}{reverse('dashboard:customer_list')}"
    yield named("customers", _visit(page, customers, ready="#customer-results table"))
    customer = f"{base}{reverse('dashboard:customer_detail', args=[shop.customer])}"
    yield named("customer", _visit(page, customer, ready="#recommendations li[data-supporting-product]"))
    yield named("products", _visit(page, f"{base}{reverse('dashboard:product_list')}", ready="#product-ranking"))
    product = f"{base}{reverse('dashboard:product_detail', args=[shop.product])}"
    # Both panels are fetched after the page renders; measure once they are in.
    yield named("product", _visit(page, product, ready="#similar-products"))
    page.locator("#product-reach[data-customers]").wait_for()
    yield named("product-with-reach", page.evaluate(MEASURE))
    MerchandisingRule.objects.create(
        name="Autumn outerwear campaign: women's long coats first", action="pin", target_type="product",
        target=shop.product, rank=1, starts_at=timezone.now(), ends_at=timezone.now() + timedelta(days=30),
        created_by=f"user:{username}",
    )  # fmt: skip
    yield named("rules", _visit(page, f"{base}{reverse('dashboard:rule_list')}", ready="#rule-form"))
    missing = f"{base}/dashboard/customers/{_customer_id(99_999_999)}/"
    yield named("not-found", _visit(page, missing, status=404))


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_scrolls_sideways_and_wide_tables_scroll_in_their_own_box(
    browser_page, live_server, shop, admin_user, width
):
    page = browser_page
    page.set_viewport_size({"width": width, "height": 860})

    measured = dict(_every_page(page, live_server.url, shop, admin_user.username, width))

    overflowing = {name: m["overflow"] for name, m in measured.items() if m["overflow"] > 0}
    assert not overflowing, f"px of sideways scrolling at {width} px: {overflowing}"
    tables = {(name, t["table"]): t for name, m in measured.items() for t in m["tables"]}
    assert len(tables) >= 11, sorted(tables)  # every page's tables were there to measure
    loose = {key: t for key, t in tables.items() if t["overflowX"] not in ("auto", "scroll")}
    assert not loose, f"tables whose box does not scroll sideways: {loose}"
    past_the_edge = {key: t["boxRight"] for key, t in tables.items() if t["boxRight"] > width}
    assert not past_the_edge, past_the_edge
    if width == PHONE:
        # The ranking's nine columns are wider than a phone: its box scrolls, not the page.
        assert tables[("products", "product-ranking")]["scrollsInside"] > 0


# The effective size of the charts' tick labels: their font size in the viewBox's units,
# times how much the SVG is scaled to fit its column.
TICK_PX = """
() => [...document.querySelectorAll('figure.chart svg')].map(svg => {
  const tick = svg.querySelector('.tick');
  return parseFloat(getComputedStyle(tick).fontSize) * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
})
"""


@pytest.mark.parametrize("width", WIDTHS)
def test_chart_labels_stay_readable(browser_page, live_server, shop, admin_user, width):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 860})
    log_in(page, base, admin_user.username, PASSWORD)
    sizes = {}
    for name, path in [
        ("overview", reverse("dashboard:overview")),
        ("run", reverse("dashboard:run_detail", args=[shop.ended_run])),
        ("product", reverse("dashboard:product_detail", args=[shop.product])),
    ]:
        page.goto(f"{base}{path}")
        page.locator("figure.chart svg").first.wait_for()
        sizes[name] = [round(px, 1) for px in page.evaluate(TICK_PX)]
        right = page.evaluate("() => Math.max(...[...document.querySelectorAll('figure.chart')].map("
                              "f => f.getBoundingClientRect().right))")  # fmt: skip
        assert right <= width, (name, right)

    assert [len(s) for s in sizes.values()] == [1, 2, 2], sizes
    small = {name: s for name, s in sizes.items() if min(s) < 9.5}
    assert not small, f"chart labels under 9.5 px at {width} px: {small}"


def test_the_customer_pages_why_column_stays_readable_on_a_phone(browser_page, live_server, shop, admin_user):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": 1366, "height": 860})
    log_in(page, base, admin_user.username, PASSWORD)
    page.goto(f"{base}{reverse('dashboard:customer_detail', args=[shop.customer])}")
    page.locator("#recommendations li[data-supporting-product]").first.wait_for()
    desktop_height = page.evaluate("() => document.documentElement.scrollHeight")

    page.set_viewport_size({"width": PHONE, "height": 860})
    why = page.evaluate(
        "() => [...document.querySelectorAll('#recommendations td.why')].map(td => {"
        " const r = td.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width}; })"
    )
    phone_height = page.evaluate("() => document.documentElement.scrollHeight")
    screenshot(page, f"phone-layout-customer-why-{PHONE}")

    assert len(why) == 10
    # Each reason is on the screen, not off in a scrolled box, and wider than a sliver.
    narrowest = min(cell["width"] for cell in why)
    assert narrowest >= 250, f"the Why column is {narrowest:.0f} px wide at {PHONE} px"
    assert all(cell["left"] >= 0 and cell["right"] <= PHONE for cell in why), why
    # A phone shows a third of a desktop's width: about three times the height is fair, not eight.
    assert phone_height <= 3 * desktop_height, (phone_height, desktop_height)
