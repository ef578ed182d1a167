from django.urls import path

from . import apis

app_name = "engagement"

urlpatterns = [
    path("events/", apis.EventIngestApi.as_view(), name="events"),
    path("products/", apis.CatalogUpsertApi.as_view(), name="products"),
    path("products/popular/", apis.PopularProductListApi.as_view(), name="products-popular"),
]
