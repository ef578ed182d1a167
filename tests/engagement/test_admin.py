"""The Django admin lists what the shop sent, with a bounded number of queries."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from engagement.models import Engagement, InteractionEvent
from engagement.services import EventIn, engagement_fold, events_ingest


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", password="pw-for-tests")
    client.force_login(user)
    return client


def ingest(n: int) -> list[EventIn]:
    events = [
        EventIn(uuid.uuid4(), f"c-{i % 7}", f"p-{i % 11}", 500, 4000, i % 3 == 0, timezone.now())
        for i in range(n)
    ]
    events_ingest(events=events)
    return events


@pytest.mark.parametrize(
    "url",
    [
        "/admin/engagement/interactionevent/",
        "/admin/engagement/engagement/",
        "/admin/engagement/customer/",
        "/admin/engagement/product/",
        "/admin/engagement/shopapikey/",
    ],
)
def test_each_list_page_answers_with_the_same_queries_for_few_or_many_rows(admin_client, url):
    ingest(5)
    engagement_fold()
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200
    ingest(60)
    engagement_fold()
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(url).status_code == 200

    assert len(many) == len(few)


def test_it_shows_an_event_sent_through_the_api(admin_client, shop_client):
    event_id = uuid.uuid4()
    shop_client.post(
        "/api/v1/events/",
        {"events": [{"event_id": str(event_id), "customer": "c-admin", "product": "p-admin", "clicked": True}]},
        format="json",
    )

    page = admin_client.get("/admin/engagement/interactionevent/", {"q": "c-admin"})

    assert InteractionEvent.objects.filter(event_id=event_id).exists()
    assert "c-admin" in page.content.decode()


def test_events_and_engagement_are_read_only_in_the_admin(admin_client):
    ingest(1)
    engagement_fold()
    event, engagement = InteractionEvent.objects.get(), Engagement.objects.get()

    event_page = admin_client.get(f"/admin/engagement/interactionevent/{event.pk}/change/")
    engagement_page = admin_client.get(f"/admin/engagement/engagement/{engagement.pk}/change/")

    assert event_page.status_code == engagement_page.status_code == 200
    assert 'name="_save"' not in event_page.content.decode()
    assert 'name="_save"' not in engagement_page.content.decode()
