"""Click fraud (issue 6, item 14): bots flagged by the fold, left out of training, the target not lifted.

A small demo shop (engagement.demo: planted tastes) is folded and trained on. Then bot
customers, through the API, hammer one unremarkable product: 150 events in a minute
each (a person makes a few), each claiming a full minute of dwell. The fold must flag
exactly the bots, with both reasons; the next real training run must leave them out, so
that for the customers who never touched the target (the "unrelated" ones) its mean rank
is where the clean model put it. The control proves the test can fail: the same run with
the flags deleted (no filter) does lift the target for them.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from dashboard.selectors.products import products_ranking
from engagement.models import Engagement, InteractionEvent, SuspiciousCustomer
from engagement.selectors import popular_cache_clear
from engagement.services import EventIn, engagement_fold, events_ingest
from tests.engagement.test_import_movielens import datasets_dir
from tests.faults.conftest import figure  # noqa: F401 (fixture)
from tests.training.conftest import _fresh_serving_and_models, seed_small_shop  # noqa: F401 (autouse fixture)
from training.models import TrainingRun
from training.services import training_run_start
from training.services.runs import training_run_execute
from training.artifacts import model_version_load

SHOP = {"n_customers": 150, "n_products": 120, "n_events": 6_000, "seed": 11, "days": 30}
# Short runs: the comparison is between three runs with the same options and seed.
RUN_OPTIONS = {"epochs": 4, "patience": 4, "seed": 5}
BOTS = 24  # enough to lift the target well past LIFT_MARGIN when unfiltered (12 lifted it by 3.6 to 7.6 places: CI flaked)
BOT_EVENTS_PER_MINUTE = 150  # the limit is 60 (RECSITE_FRAUD_MAX_EVENTS_PER_MINUTE)
BOT_DWELL_MS = 60_000  # per event: 150 minutes of dwell claimed in one minute
# "Not lifted": the target's mean rank among unrelated customers moves up by less than
# this many places (of 120 products); the unfiltered control must move it up by more.
LIFT_MARGIN = 6.0


def _train() -> tuple[TrainingRun, object]:
    run, _ = training_run_start(triggered_by="test:click-fraud", options=RUN_OPTIONS, enqueue=False)
    run = training_run_execute(run_id=run.pk)
    assert run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.REJECTED), run.error
    return run, model_version_load(run.model_version)


def _mean_rank(loaded, *, customers: list[str], product: str) -> float:
    """The product's mean rank (1 = first) in the full catalog ranking of each customer."""
    rows = np.array([loaded.customer_index[c] for c in customers])
    scores = loaded.scorer.score(rows)
    target = scores[:, loaded.product_index[product]]
    return float(np.mean((scores > target[:, None]).sum(axis=1) + 1))


def _unremarkable_product() -> tuple[str, set[str]]:
    """A product in the middle of the popularity order, and the customers who engaged with it."""
    counts = {}
    for product, customer in Engagement.objects.values_list("product__external_id", "customer__external_id"):
        counts.setdefault(product, set()).add(customer)
    ordered = sorted(counts, key=lambda p: (len(counts[p]), p))
    target = ordered[len(ordered) // 2]
    return target, counts[target]


def _bot_events(product: str) -> list[dict]:
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    step = timedelta(seconds=59) / BOT_EVENTS_PER_MINUTE  # all inside one minute
    return [
        {
            "event_id": str(uuid.uuid4()),
            "customer": f"bot-{b}",
            "product": product,
            "hover_ms": 10_000,
            "dwell_ms": BOT_DWELL_MS,
            "clicked": True,
            "occurred_at": (start + i * step).isoformat(),
        }
        for b in range(BOTS)
        for i in range(BOT_EVENTS_PER_MINUTE)
    ]


def test_bot_traffic_is_flagged_left_out_of_training_and_does_not_lift_its_product(db, shop_client, figure):
    seed_small_shop(**SHOP)
    target, engaged_with_target = _unremarkable_product()
    _, clean = _train()
    unrelated = sorted(c for c in clean.customer_index.keys() if c not in engaged_with_target)
    clean_rank = _mean_rank(clean, customers=unrelated, product=target)

    sent = _bot_events(target)
    for i in range(0, len(sent), 1000):
        response = shop_client.post("/api/v1/events/", {"events": sent[i : i + 1000]}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["rejected"] == []
    fold = engagement_fold()

    flags = {f.customer.external_id: f for f in SuspiciousCustomer.objects.select_related("customer")}
    assert sorted(flags) == sorted(f"bot-{b}" for b in range(BOTS)), "only the bots, and every bot"
    assert all(f.reasons == ["events_per_minute", "dwell_over_wall_clock"] for f in flags.values())
    assert {f.max_events_per_minute for f in flags.values()} == {BOT_EVENTS_PER_MINUTE}
    # Kept: nothing the shop sent is lost, and the fold scored it like any other traffic.
    assert InteractionEvent.objects.filter(customer__external_id__startswith="bot-").count() == len(sent)
    assert Engagement.objects.filter(customer__external_id__startswith="bot-").count() == BOTS

    _, filtered = _train()
    assert not any(c.startswith("bot-") for c in filtered.customer_index.keys()), "a bot was trained on"
    filtered_rank = _mean_rank(filtered, customers=unrelated, product=target)

    # The control: the same traffic with no filter (the flags deleted) must lift the target.
    SuspiciousCustomer.objects.all().delete()
    _, unfiltered = _train()
    unfiltered_rank = _mean_rank(unfiltered, customers=unrelated, product=target)

    figure(
        "click_fraud",
        bot_events_sent=len(sent),
        bot_events_stored=len(sent),
        customers_flagged=len(flags),
        fold_flagged=fold.customers_flagged,
        unrelated_customers=len(unrelated),
        catalog=len(clean.product_ids),
        target_mean_rank_clean=round(clean_rank, 1),
        target_mean_rank_attacked_unfiltered=round(unfiltered_rank, 1),
        target_mean_rank_attacked_filtered=round(filtered_rank, 1),
    )
    assert filtered_rank > clean_rank - LIFT_MARGIN, "the filtered model lifted the bots' product"
    assert unfiltered_rank < clean_rank - LIFT_MARGIN, "the control did not lift it: this test could not fail"


def _events(customer: str, start: datetime, seconds: list[float], *, dwell_ms: int = 1_000) -> list[EventIn]:
    return [
        EventIn(event_id=uuid.uuid4(), customer=customer, product=f"p-{i % 5}", hover_ms=0, dwell_ms=dwell_ms,
                clicked=False, occurred_at=start + timedelta(seconds=second))
        for i, second in enumerate(seconds)
    ]  # fmt: skip


def _flags() -> dict[str, SuspiciousCustomer]:
    return {f.customer.external_id: f for f in SuspiciousCustomer.objects.select_related("customer")}


def test_a_burst_read_by_two_folds_is_judged_whole(db):
    """40 + 40 events within 56 s folded in two runs: 80 in one 60 s, over the limit of 60."""
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=3)
    events_ingest(events=_events("fast", minute, [i * 0.7 for i in range(40)]))
    assert engagement_fold().customers_flagged == 0
    events_ingest(events=_events("fast", minute, [i * 0.7 for i in range(40, 80)]))
    assert engagement_fold().customers_flagged == 1
    flag = SuspiciousCustomer.objects.get(customer__external_id="fast")
    # The first 60 s over the limit ends at the 61st event (42 s in) and so starts 18 s before the minute.
    first_start = minute + timedelta(seconds=60 * 0.7) - timedelta(seconds=60)
    assert (flag.reasons, flag.max_events_per_minute, flag.first_seen_at) == (["events_per_minute"], 80, first_start)


def test_a_person_reading_for_five_minutes_is_not_flagged(db):
    """Dwell is time spent before the event: one capped read ending in a minute, plus that minute, is plausible."""
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    reads = [(0, 3_600_000), (20, 30_000), (50, 25_000)]  # a tab left open for an hour, then two short reads
    events_ingest(events=[
        EventIn(event_id=uuid.uuid4(), customer="reader", product=f"p-{i}", hover_ms=500, dwell_ms=dwell,
                clicked=False, occurred_at=minute + timedelta(seconds=second))
        for i, (second, dwell) in enumerate(reads)
    ])  # fmt: skip
    engagement_fold()
    assert not SuspiciousCustomer.objects.exists()


def test_the_limit_twice_across_a_minute_boundary_is_one_window_over_it(db):
    """60 events in the last 30 s of a minute and 60 in the first 30 s of the next: each clock
    minute holds the limit, but one 60 s holds 120. A person at 50 a minute for three minutes
    (100 in any two clock minutes) is not flagged. Folded in two runs, then rebuilt from nothing:
    the incremental and the full query find the same."""
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    events_ingest(events=_events("straddler", minute, [30 + i * 0.5 for i in range(60)])
                  + _events("steady", minute, [i * 1.2 for i in range(150)]))  # fmt: skip
    assert engagement_fold().customers_flagged == 0
    events_ingest(events=_events("straddler", minute, [60 + i * 0.5 for i in range(60)]))
    assert engagement_fold().customers_flagged == 1
    flags = _flags()
    assert sorted(flags) == ["straddler"]
    assert (flags["straddler"].reasons, flags["straddler"].max_events_per_minute) == (["events_per_minute"], 120)
    # A 60 s over the limit first ends at the 61st event (at 60 s) and last at the 120th (at 89.5 s).
    expected = (minute, minute + timedelta(seconds=29.5))
    assert (flags["straddler"].first_seen_at, flags["straddler"].last_seen_at) == expected

    SuspiciousCustomer.objects.all().delete()
    assert engagement_fold(full=True).customers_flagged == 1
    rebuilt = _flags()
    assert sorted(rebuilt) == ["straddler"]
    assert (rebuilt["straddler"].max_events_per_minute, rebuilt["straddler"].first_seen_at,
            rebuilt["straddler"].last_seen_at) == (120, *expected)  # fmt: skip


@pytest.mark.parametrize("sort", ["engagement", "clicks"])
def test_the_dashboard_ranking_leaves_flagged_customers_out_of_engagement_but_not_of_events(db, sort):
    """As products_popular does: a bot's engagement doesn't rank a product; its events still count in ProductDay."""
    popular_cache_clear()
    start = timezone.now() - timedelta(minutes=30)
    events_ingest(events=_events("bot", start, [i * 0.2 for i in range(100)], dwell_ms=30_000)
                  + _events("alice", start, [0.0, 90.0]))  # fmt: skip
    assert engagement_fold().customers_flagged == 1
    alice = {e.product.external_id: float(e.score) for e in Engagement.objects.filter(customer__external_id="alice")}

    rows = {r.product.external_id: r for r in products_ranking(days=7, sort=sort).rows}
    assert {p: (r.customers, r.engagement) for p, r in rows.items() if p in alice} == {
        p: (1, score) for p, score in alice.items()
    }
    assert {p: rows[p].events for p in alice} == {p: 21 for p in alice}  # 20 of the bot's and alice's one
    bot_only = {"p-2", "p-3", "p-4"}
    if sort == "engagement":
        assert not bot_only & rows.keys()  # no engagement left to rank them by
    else:
        assert {p: (rows[p].customers, rows[p].engagement, rows[p].events) for p in bot_only} == {
            p: (0, 0.0, 20) for p in bot_only
        }


def _write_movielens(directory: Path, *, users: dict[int, list[int]]) -> Path:
    """An ml-100k-style directory: each user rates 5 stars at the given Unix times, one movie each."""
    directory.mkdir()
    movies = max(len(times) for times in users.values())
    genres = "|".join(["0"] * 18 + ["1"])
    (directory / "u.item").write_text("".join(f"{m}|Movie {m} (1998)|01-Jan-1998||http://x|{genres}\n"
                                              for m in range(1, movies + 1)))  # fmt: skip
    (directory / "u.data").write_text("".join(f"{user}\t{m}\t5\t{t}\n" for user, times in users.items()
                                              for m, t in enumerate(times, start=1)))  # fmt: skip
    return directory


def test_imported_history_is_not_judged_but_the_same_burst_live_is(db, tmp_path):
    """MovieLens history: a user rating 80 movies in 40 s, each 5 stars (180 s of dwell). Imported
    (happened in 1998, received now) nobody is flagged; the same burst sent live is, for both reasons."""
    burst = [893_286_638 + i // 2 for i in range(80)]
    call_command("import_movielens", str(_write_movielens(tmp_path / "ml", users={1: burst, 2: burst[:3]})),
                 stdout=StringIO(), stderr=StringIO())  # fmt: skip
    assert InteractionEvent.objects.count() == 83
    assert engagement_fold().customers_flagged == 0
    assert not SuspiciousCustomer.objects.exists()

    now = timezone.now().replace(microsecond=0)
    live = [now - timedelta(minutes=5) + timedelta(seconds=t - burst[0]) for t in burst]
    events_ingest(events=[
        EventIn(event_id=uuid.uuid4(), customer="ml-live", product=f"ml-{m}", hover_ms=10_000, dwell_ms=180_000,
                clicked=True, occurred_at=at)
        for m, at in enumerate(live, start=1)
    ])  # fmt: skip
    assert engagement_fold().customers_flagged == 1
    flags = _flags()
    assert sorted(flags) == ["ml-live"]
    assert flags["ml-live"].reasons == ["events_per_minute", "dwell_over_wall_clock"]


def test_events_without_occurred_at_are_not_judged(db):
    """A shop that buffers clicks and sends them without occurred_at: ingest stamps them all with
    the receive time, one instant, which says nothing about how fast they happened. The same
    number of events with the shop's own times, in one minute, is flagged."""
    now = timezone.now()
    buffered = [
        EventIn(event_id=uuid.uuid4(), customer="buffered", product=f"p-{i % 7}", hover_ms=0, dwell_ms=20_000,
                clicked=False, occurred_at=None)
        for i in range(80)
    ]  # fmt: skip
    events_ingest(events=buffered + _events("stamped", now - timedelta(minutes=2), [i * 0.5 for i in range(80)]))
    stored = InteractionEvent.objects.filter(customer__external_id="buffered")
    assert stored.count() == 80 and len({e.occurred_at for e in stored}) == 1  # one instant: the receive time
    assert engagement_fold().customers_flagged == 1
    assert sorted(_flags()) == ["stamped"]


def test_an_imported_file_without_occurred_at_is_not_judged(db, tmp_path):
    """import_events: a missing occurred_at means "when received", as in the API, so a file of
    one customer's 80 events without times is stamped by ingest and not judged."""
    path = tmp_path / "events.jsonl"
    path.write_text("".join(
        json.dumps({"event_id": str(uuid.uuid4()), "customer": "from-file", "product": f"p-{i % 7}",
                    "dwell_ms": 20_000}) + "\n"
        for i in range(80)
    ))  # fmt: skip
    call_command("import_events", str(path), stdout=StringIO(), stderr=StringIO())
    stored = InteractionEvent.objects.filter(customer__external_id="from-file")
    assert stored.count() == 80 and all(e.occurred_at == e.received_at for e in stored)
    assert engagement_fold().customers_flagged == 0
    assert not SuspiciousCustomer.objects.exists()


def test_the_real_ml_100k_imported_and_folded_flags_nobody(db):
    """ml-100k: 943 users, many of them rating several movies a minute (834 would be flagged as live traffic)."""
    directory = datasets_dir() / "ml-100k"
    if not (directory / "u.data").is_file():
        message = (
            f"ml-100k is not at {directory}. Download https://files.grouplens.org/datasets/movielens/"
            "ml-100k.zip, unzip it and set RECSITE_DATASETS to the folder holding ml-100k/."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    call_command("import_movielens", str(directory), stdout=StringIO(), stderr=StringIO())
    fold = engagement_fold()
    assert fold.events_folded == 100_000
    assert (fold.customers_flagged, SuspiciousCustomer.objects.count()) == (0, 0)
