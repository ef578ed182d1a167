from django.apps import AppConfig
from django.core import checks


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        # Imported here, not at the top: models must not be imported before the app registry is ready.
        from engagement.signals import engagement_folded
        from recsite.health import state_report_register

        from .checks import check_training_time_limits
        from .receivers import engagement_folded_received
        from .serving import served_model_state

        checks.register(check_training_time_limits)
        engagement_folded.connect(engagement_folded_received, dispatch_uid="training.engagement_folded")
        state_report_register("model", served_model_state)
