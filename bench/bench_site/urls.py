"""recsite's URLs plus ``bench/minimal/<customer>/``: the reference the serving benchmark measures against."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from engagement.permissions import HasShopApiKey
from recsite.urls import urlpatterns as recsite_urlpatterns


class MinimalApi(APIView):
    """The framework's floor: what RecommendationListApi costs before it does any work.

    Same route shape, authentication, permission and throttle classes (the settings'
    defaults, as RecommendationListApi uses them) and renderer; no query of its own,
    no model, a constant body.
    """

    permission_classes = [HasShopApiKey]

    def get(self, request, customer: str):
        return Response({"ok": True})


urlpatterns = [
    path("bench/minimal/<str:customer>/", MinimalApi.as_view(), name="bench-minimal"),
    *recsite_urlpatterns,
]
