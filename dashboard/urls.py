"""The dashboard's routes: each page group's module lists its own (dashboard/views/)."""

from django.urls import path

from .views import customers, overview, products, rules, runs

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    *runs.urlpatterns,
    *customers.urlpatterns,
    *products.urlpatterns,
    *rules.urlpatterns,
]
