"""The dashboard's cast (STYLE 13): an admin, a merchandiser, an outsider and an anonymous visitor."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

# The training fixtures: a small planted shop, hand-made model versions, a fresh model
# directory and serving cache per test.
from tests.training.conftest import (  # noqa: F401
    _fresh_serving_and_models,
    make_version,
    seed_small_shop,
    small_shop,
)

PASSWORD = "correct horse battery staple"


def _user(username: str, *, group: str | None = None, staff: bool = False) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=staff)
    if group:
        # get_or_create: a transactional test's flush removes the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def admin_user(db) -> User:
    """A member of recsys-admin (not staff): may retrain, cancel, promote, roll back."""
    return _user("ada", group="recsys-admin")


@pytest.fixture
def merchandiser_user(db) -> User:
    return _user("mia", group="merchandiser")


@pytest.fixture
def outsider_user(db) -> User:
    """Signed in, but in neither group and not staff."""
    return _user("otto")


def _client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_web(admin_user) -> Client:
    return _client_for(admin_user)


@pytest.fixture
def merchandiser_web(merchandiser_user) -> Client:
    return _client_for(merchandiser_user)


@pytest.fixture
def outsider_web(outsider_user) -> Client:
    return _client_for(outsider_user)


@pytest.fixture
def anonymous_web(db) -> Client:
    return Client()


@pytest.fixture
def csrf_web(merchandiser_user, admin_user):
    """Return a function making a client that enforces CSRF, as a browser's session would."""

    def make(user: User) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make
