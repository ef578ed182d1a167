"""The site's URLs and its handler500, plus views that fail as a bug would, with secrets in the error."""

from django.db import ProgrammingError
from django.urls import path
from rest_framework.views import APIView

from recsite.urls import *  # noqa: F403  (handler500 included: Django reads it from ROOT_URLCONF)
from recsite.urls import urlpatterns as site_urlpatterns

# What must never reach a client: a setting's name and value, SQL, the exception's words.
LEAK = "SECRET_KEY=s3cr3t-for-tests DATABASE_URL=postgres://app:hunter2@db/recsite"
SQL = 'SELECT "engagement_customer"."external_id" FROM "engagement_customer" WHERE password = \'hunter2\''


class BrokenApi(APIView):
    """An API view with a bug (default permission: any valid key)."""

    def get(self, request):
        raise RuntimeError(f"bug in the API view: {LEAK}")

    def post(self, request):
        raise ProgrammingError(f"column does not exist\nLINE 1: {SQL}")


def broken_page(request):
    raise RuntimeError(f"bug in a page: {LEAK}")


def broken_plain_api(request):
    """A plain Django view under /api/: its error goes to handler500, not DRF's handler."""
    raise RuntimeError(f"bug outside DRF: {LEAK}")


urlpatterns = [
    path("api/v1/test-broken/", BrokenApi.as_view()),
    path("api/v1/test-broken-plain/", broken_plain_api),
    path("test-broken/", broken_page),
    *site_urlpatterns,
]
