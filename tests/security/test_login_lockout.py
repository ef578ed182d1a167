"""Failed logins lock out the username and the client address for a while (issue 17 row 3).

Before, 50 wrong passwords then the right one logged in, and every guess cost a PBKDF2
hash. django-axes (recsite/settings.py, "login lockout") counts failures per username
and per client address; at the limit, both are refused, right password or not, until
the cool-off has passed since the last failure. Another user from another address is
not affected.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, RequestFactory, override_settings

from recsite.middleware import client_ip
from tests.dashboard.conftest import PASSWORD

LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.9"


@pytest.fixture
def staff(db) -> dict[str, User]:
    # Staff, so that the admin's login page accepts them too.
    return {name: User.objects.create_user(name, password=PASSWORD, is_staff=True) for name in ("mia", "otto")}


def log_in(path: str, username: str, password: str, *, address: str = ATTACKER):
    client = Client(REMOTE_ADDR=address)
    answer = client.post(path, {"username": username, "password": password})
    return answer, "_auth_user_id" in client.session


def fail_until_locked(path: str, username: str, *, address: str = ATTACKER) -> list[int]:
    return [log_in(path, username, "wrong", address=address)[0].status_code for _ in range(settings.AXES_FAILURE_LIMIT)]


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_the_right_password_is_refused_after_the_limit_of_wrong_ones(path, staff, figure):
    statuses = fail_until_locked(path, "mia")

    started = time.perf_counter()
    answer, logged_in = log_in(path, "mia", PASSWORD)
    locked_ms = (time.perf_counter() - started) * 1000

    assert statuses[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)  # the form again, with its error
    assert statuses[-1] == 429
    assert answer.status_code == 429
    assert not logged_in
    assert b"too many login attempts" in answer.content
    figure(
        "login_lockout", page=path, failure_limit=settings.AXES_FAILURE_LIMIT,
        cooloff_minutes=settings.AXES_COOLOFF_TIME.total_seconds() / 60, locked_answer_ms=round(locked_ms, 1),
    )  # fmt: skip


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_a_locked_username_is_refused_from_another_address_too(path, staff):
    fail_until_locked(path, "mia")

    answer, logged_in = log_in(path, "mia", PASSWORD, address=ELSEWHERE)

    assert answer.status_code == 429
    assert not logged_in


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_a_locked_address_is_refused_for_another_username_too(path, staff):
    fail_until_locked(path, "mia")

    answer, logged_in = log_in(path, "otto", PASSWORD)

    assert answer.status_code == 429
    assert not logged_in


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_another_user_from_another_address_still_logs_in(path, staff):
    fail_until_locked(path, "mia")

    answer, logged_in = log_in(path, "otto", PASSWORD, address=ELSEWHERE)

    assert answer.status_code == 302
    assert logged_in


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_guessing_many_usernames_from_one_address_locks_the_address(path, staff):
    for number in range(settings.AXES_FAILURE_LIMIT):
        log_in(path, f"guess-{number}", "wrong")

    answer, logged_in = log_in(path, "mia", PASSWORD)

    assert answer.status_code == 429
    assert not logged_in


def test_the_lockout_ends_when_the_cool_off_has_passed_since_the_last_failure(staff):
    fail_until_locked("/accounts/login/", "mia")
    # As if the cool-off had passed: the failures' last attempt is older than it.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME)

    answer, logged_in = log_in("/accounts/login/", "mia", PASSWORD)

    assert answer.status_code == 302
    assert logged_in


def test_logging_into_an_account_of_ones_own_does_not_clear_the_addresss_failures(staff):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in("/accounts/login/", "mia", "wrong")
    assert log_in("/accounts/login/", "otto", PASSWORD)[1]  # the guesser's own account

    answer, logged_in = log_in("/accounts/login/", "mia", "wrong")

    assert answer.status_code == 429
    assert not logged_in


def test_the_limits_are_those_the_settings_comment_explains():
    assert settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.AXES_LOCKOUT_PARAMETERS == ["ip_address", "username"]


def test_the_client_address_is_remote_addr_unless_proxies_are_trusted():
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4")

    assert client_ip(request) == "10.0.0.1"  # X-Forwarded-For is the client's to forge


@override_settings(RECSITE_TRUSTED_PROXIES=1)
def test_behind_one_proxy_the_client_is_the_address_the_proxy_appended():
    forged = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7")
    direct = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1")

    assert client_ip(forged) == "203.0.113.7"
    assert client_ip(direct) == "10.0.0.1"
