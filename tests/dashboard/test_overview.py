"""The overview page: counts, the serving model against popularity, events per day, the latest run."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.selectors.overview import events_per_day, shop_counts
from engagement.models import Product
from engagement.services import EventIn, engagement_fold, events_ingest
from training.models import ModelVersion, TrainingRun

URL = "/dashboard/"


def _event(customer: str, product: str, at) -> EventIn:
    return EventIn(event_id=uuid.uuid4(), customer=customer, product=product, hover_ms=500, dwell_ms=1000,
                   clicked=False, occurred_at=at)  # fmt: skip


def test_anonymous_visitors_are_sent_to_log_in(anonymous_web):
    response = anonymous_web.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/dashboard/")


def test_an_htmx_request_without_a_session_redirects_the_whole_page(anonymous_web):
    response = anonymous_web.get(URL, headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/dashboard/runs/?page=2"})
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/accounts/login/?next=%2Fdashboard%2Fruns%2F%3Fpage%3D2"


def test_a_signed_in_user_outside_both_groups_is_refused(outsider_web):
    assert outsider_web.get(URL).status_code == 403


def test_counts_separate_today_the_last_week_and_older_events(db):
    now = timezone.now().replace(hour=12)
    events_ingest(
        events=[
            _event("c1", "p1", now - timedelta(hours=1)),
            _event("c1", "p2", now - timedelta(hours=2)),
            _event("c2", "p1", now - timedelta(days=3)),
            _event("c3", "p1", now - timedelta(days=20)),
            _event("c4", "p1", now - timedelta(days=40)),
        ]
    )
    Product.objects.filter(external_id="p2").update(active=False)
    counts = shop_counts(now=now)
    assert (counts.events_today, counts.events_7_days) == (2, 3)
    assert (counts.active_customers, counts.customers) == (3, 4)
    assert (counts.active_products, counts.products) == (1, 2)


def test_events_per_day_has_every_day_of_the_window_zeros_included(db):
    today = timezone.now().date()
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    events_ingest(events=[_event("c1", "p1", noon - timedelta(days=2)) for _ in range(3)] + [_event("c1", "p1", noon)])
    engagement_fold()
    days = events_per_day(days=5, today=today)
    assert [d.day for d in days] == [today - timedelta(days=i) for i in (4, 3, 2, 1, 0)]
    assert [d.events for d in days] == [0, 0, 3, 0, 1]


def test_the_page_shows_the_serving_model_next_to_popularity_and_the_latest_run(merchandiser_web, make_version):
    metrics = {"model": {"full": {"ndcg@10": 0.3911, "hr@10": 0.5}, "sampled": {"hr@10": 0.9}},
               "popularity": {"full": {"ndcg@10": 0.1177, "hr@10": 0.2}, "sampled": {"hr@10": 0.6}}}  # fmt: skip
    run = TrainingRun.objects.create(triggered_by="user:ada", status=TrainingRun.Status.SUCCEEDED, metrics=metrics,
                                     finished_at=timezone.now())  # fmt: skip
    version = make_version(customer_ids=["c1"], product_ids=["p1"], training_run=run, metrics=metrics,
                           status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now() - timedelta(hours=3))  # fmt: skip
    TrainingRun.objects.create(triggered_by="schedule", status=TrainingRun.Status.FAILED, error="Out of memory")

    html = merchandiser_web.get(URL).content.decode()
    assert f'data-version="{version.pk}"' in html
    assert "0.3911" in html and "0.1177" in html  # the model's NDCG@10 and popularity's
    assert "3\xa0hours" in html  # its age
    assert "Out of memory" in html  # the latest run is the failed one


def test_a_serving_version_whose_run_was_deleted_still_shows(merchandiser_web, make_version):
    run = TrainingRun.objects.create(triggered_by="schedule", status=TrainingRun.Status.SUCCEEDED)
    version = make_version(customer_ids=["c1"], product_ids=["p1"], training_run=run,
                           status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())  # fmt: skip
    run.delete()

    response = merchandiser_web.get(URL)

    assert response.status_code == 200 and f'data-version="{version.pk}"' in response.text


def test_pages_and_their_fragments_are_cached_apart(merchandiser_web):
    assert "HX-Request" in merchandiser_web.get(URL)["Vary"]


def test_without_a_model_the_page_says_popular_products_serve(merchandiser_web):
    html = merchandiser_web.get(URL).content.decode()
    assert "No model is promoted yet" in html
    assert "No training run yet" in html


@pytest.mark.parametrize("runs", [1, 12])
def test_the_overview_costs_the_same_queries_however_much_there_is(merchandiser_web, make_version, runs,
                                                                    django_assert_max_num_queries):  # fmt: skip
    for i in range(runs):
        run = TrainingRun.objects.create(triggered_by="schedule", status=TrainingRun.Status.SUCCEEDED)
        make_version(customer_ids=["c1"], product_ids=["p1"], training_run=run, seed=i)
    ModelVersion.objects.filter(pk=ModelVersion.objects.first().pk).update(
        status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now()
    )
    # Session, user, roles; 5 counts, events per day, promoted version, latest run.
    with django_assert_max_num_queries(11):
        assert merchandiser_web.get(URL).status_code == 200
