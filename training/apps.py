from django.apps import AppConfig
from django.core import checks


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from .checks import check_training_time_limits

        checks.register(check_training_time_limits)
