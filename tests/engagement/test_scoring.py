"""The engagement score's rules (DESIGN "The engagement score"), held by property tests."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engagement.scoring import (
    DecayedSums,
    EngagementWeights,
    EventSignals,
    engagement_summarize,
    score_at,
    score_from_sums,
)

# Fixed size and seed: the same examples on every run and machine, a predictable runtime.
PROFILE = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WEIGHTS = EngagementWeights(
    hover_cap_ms=10_000, dwell_cap_ms=300_000, hover_scale=3.0, dwell_scale=1.0, click_scale=1.0,
    hover_weight=0.2, dwell_weight=0.4, click_weight=0.4, half_life_days=30.0,
)
HALF_LIFE = timedelta(days=WEIGHTS.half_life_days)
ONE_HOUR_MS = 3_600_000  # the most one event may claim at ingest
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2025, 1, 1, tzinfo=UTC)

times = st.datetimes(
    min_value=START.replace(tzinfo=None), max_value=END.replace(tzinfo=None), timezones=st.just(UTC)
)
events = st.builds(
    EventSignals,
    hover_ms=st.integers(0, ONE_HOUR_MS),
    dwell_ms=st.integers(0, ONE_HOUR_MS),
    clicked=st.booleans(),
    occurred_at=times,
)
histories = st.lists(events, min_size=1, max_size=25)


def score(history: list[EventSignals]) -> float:
    return engagement_summarize(history, weights=WEIGHTS).score


@PROFILE
@given(histories)
def test_it_scores_in_the_unit_interval_with_three_decimals(history):
    value = score(history)

    assert 0.0 <= value <= 1.0
    assert Decimal(str(value)) == Decimal(str(value)).quantize(Decimal("0.001"))


@PROFILE
@given(st.data(), histories)
def test_it_gives_the_same_numbers_for_the_same_events_in_any_order(data, history):
    shuffled = data.draw(st.permutations(history))

    assert engagement_summarize(shuffled, weights=WEIGHTS) == engagement_summarize(history, weights=WEIGHTS)
    assert score(history) == score(list(history))


@PROFILE
@pytest.mark.parametrize("signal", ["hover_ms", "dwell_ms"])
@given(st.data(), histories, st.integers(0, ONE_HOUR_MS))
def test_it_never_scores_lower_for_more_hover_or_dwell(signal, data, history, more):
    i = data.draw(st.integers(0, len(history) - 1))
    longer = [*history]
    longer[i] = replace(history[i], **{signal: getattr(history[i], signal) + more})

    assert score(longer) >= score(history)


@PROFILE
@given(st.data(), histories)
def test_it_never_scores_lower_for_a_click(data, history):
    i = data.draw(st.integers(0, len(history) - 1))
    clicked = [*history]
    clicked[i] = replace(history[i], clicked=True)

    assert score(clicked) >= score(history)


@PROFILE
@given(histories, events)
def test_it_never_scores_lower_for_one_more_event_at_the_same_moment(history, extra):
    # A later event moves the anchor, so compare both as of one moment after all of them.
    as_of = max(e.occurred_at for e in [*history, extra])
    before = engagement_summarize(history, weights=WEIGHTS)
    after = engagement_summarize([*history, extra], weights=WEIGHTS)

    assert score_at(after.sums, after.last_event_at, as_of, weights=WEIGHTS) >= score_at(
        before.sums, before.last_event_at, as_of, weights=WEIGHTS
    )


@PROFILE
@given(st.data(), histories)
def test_it_scores_an_hour_of_dwell_or_hover_like_its_cap(data, history):
    i = data.draw(st.integers(0, len(history) - 1))
    at_caps = [*history]
    at_caps[i] = replace(history[i], hover_ms=WEIGHTS.hover_cap_ms, dwell_ms=WEIGHTS.dwell_cap_ms)
    an_hour = [*history]
    an_hour[i] = replace(history[i], hover_ms=ONE_HOUR_MS, dwell_ms=ONE_HOUR_MS)

    assert score(an_hour) == score(at_caps)


@PROFILE
@given(events.filter(lambda e: e.hover_ms >= 1000 or e.dwell_ms >= 1000 or e.clicked))
def test_it_compresses_repeats_so_a_hundred_events_are_not_a_hundred_times_one(event):
    one, two, hundred = score([event]), score([event] * 2), score([event] * 100)

    assert 0 < one <= two <= hundred <= 1.0
    assert hundred < 100 * one
    # Diminishing returns: the second copy adds no more than the first, up to rounding:
    # each 3-decimal score is off by at most 0.0005, three of them appear (0.0015), and
    # the subtraction of floats adds its own last-bit error (e.g. 0.019 - 0.009).
    assert two - one <= one + 0.0015 + 1e-9


@PROFILE
@given(histories, events, st.timedeltas(min_value=timedelta(days=1), max_value=timedelta(days=200)))
def test_it_weighs_an_older_identical_event_less_than_a_newer_one(history, event, earlier):
    anchor = max(e.occurred_at for e in history) + timedelta(days=400)  # keeps the last event fixed
    base = [*history, replace(event, occurred_at=anchor)]
    newer = engagement_summarize([*base, replace(event, occurred_at=anchor - timedelta(days=1))], weights=WEIGHTS)
    older = engagement_summarize(
        [*base, replace(event, occurred_at=anchor - timedelta(days=1) - earlier)], weights=WEIGHTS
    )

    assert newer.score >= older.score
    if event.hover_ms:
        assert newer.sums.hover > older.sums.hover
    if event.dwell_ms:
        assert newer.sums.dwell > older.sums.dwell
    if event.clicked:
        assert newer.sums.clicks > older.sums.clicks


@PROFILE
@given(histories, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)), st.timedeltas(
    min_value=timedelta(0), max_value=timedelta(days=400)
))
def test_it_decays_the_score_as_the_as_of_time_moves_on(history, first, more):
    summary = engagement_summarize(history, weights=WEIGHTS)
    last = summary.last_event_at

    def at(when):
        return score_at(summary.sums, last, when, weights=WEIGHTS)

    assert at(last) == summary.score
    assert at(last - timedelta(minutes=5)) == summary.score  # clock skew never inflates it
    assert at(last + first + more) <= at(last + first) <= summary.score
    assert at(last + 100 * HALF_LIFE) == 0.0


def test_it_halves_the_decayed_sums_after_one_half_life():
    sums = DecayedSums(hover=1.0, dwell=0.5, clicks=2.0)
    half = DecayedSums(hover=0.5, dwell=0.25, clicks=1.0)
    last = START

    assert score_at(sums, last, last + HALF_LIFE, weights=WEIGHTS) == score_from_sums(half, weights=WEIGHTS)


def test_it_scores_the_worked_example_in_the_docs():
    at = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    summary = engagement_summarize(
        [
            EventSignals(hover_ms=4_000, dwell_ms=45_000, clicked=False, occurred_at=at - timedelta(days=30)),
            EventSignals(hover_ms=12_000, dwell_ms=20_000, clicked=True, occurred_at=at - timedelta(days=15)),
            EventSignals(hover_ms=2_500, dwell_ms=3_600_000, clicked=True, occurred_at=at),
        ],
        weights=WEIGHTS,
    )

    assert (summary.hover_ms_total, summary.dwell_ms_total, summary.clicks) == (16_500, 365_000, 2)
    assert summary.sums.hover == pytest.approx(1.157107, abs=1e-6)
    assert summary.sums.dwell == pytest.approx(1.122140, abs=1e-6)
    assert summary.sums.clicks == pytest.approx(1.707107, abs=1e-6)
    assert summary.score == 0.661
    assert score_at(summary.sums, at, at + timedelta(days=30), weights=WEIGHTS) == 0.436


def test_it_refuses_weights_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        replace(WEIGHTS, click_weight=0.5)


def test_it_names_the_setting_when_settings_are_wrong(settings):
    settings.RECSITE_ENGAGEMENT = {**settings.RECSITE_ENGAGEMENT, "HOVER_WEIGHT": 0.3}

    with pytest.raises(ImproperlyConfigured, match="RECSITE_ENGAGEMENT: HOVER_WEIGHT"):
        EngagementWeights.from_settings()


def test_it_reads_the_weights_from_settings(settings):
    settings.RECSITE_ENGAGEMENT = {**settings.RECSITE_ENGAGEMENT, "HALF_LIFE_DAYS": 7}

    assert EngagementWeights.from_settings().half_life_seconds == 7 * 86_400


def test_the_system_check_refuses_weights_that_do_not_sum_to_one(settings):
    from engagement.checks import check_engagement_weights

    assert check_engagement_weights(None) == []
    settings.RECSITE_ENGAGEMENT = {**settings.RECSITE_ENGAGEMENT, "CLICK_WEIGHT": 0.9}

    errors = check_engagement_weights(None)

    assert [e.id for e in errors] == ["engagement.E001"]
