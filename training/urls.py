from django.urls import path

from engagement import converters  # noqa: F401 (registers <external_id:>)

from . import apis

app_name = "training"

urlpatterns = [
    path("recommendations/<external_id:customer>/", apis.RecommendationListApi.as_view(), name="recommendations"),
    path("products/<external_id:product>/similar/", apis.ProductSimilarApi.as_view(), name="product-similar"),
    path("training-runs/", apis.TrainingRunListApi.as_view(), name="training-runs"),
    path("training-runs/<int:run_id>/", apis.TrainingRunDetailApi.as_view(), name="training-run"),
    path("training-runs/<int:run_id>/cancel/", apis.TrainingRunCancelApi.as_view(), name="training-run-cancel"),
    path("model-versions/", apis.ModelVersionListApi.as_view(), name="model-versions"),
    path("model-versions/rollback/", apis.ModelVersionRollbackApi.as_view(), name="model-version-rollback"),
    path("model-versions/<int:version_id>/", apis.ModelVersionDetailApi.as_view(), name="model-version"),
    path(
        "model-versions/<int:version_id>/promote/", apis.ModelVersionPromoteApi.as_view(), name="model-version-promote"
    ),
]
