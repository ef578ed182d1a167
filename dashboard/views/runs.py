"""Training runs: the list, Retrain behind a confirm step, one run's live page, and the admin actions.

The actions follow the API's rules (training/apis.py): admins only, checked here; a run
already in flight is returned rather than a second one started; a broker that cannot be
reached fails the run and says so (503, the confirm page again); PromotionRefused is
shown as an error message.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from dashboard.access import actor_of, admin_required, reader_required
from dashboard.selectors.runs import (
    run_curves,
    run_duration,
    run_in_flight,
    run_page,
    run_progress,
    run_with_version,
    serving_version,
    version_of,
)
from recsite.exceptions import RETRY_AFTER_SECONDS
from training.models import ModelVersion, TrainingRun
from training.services import (
    BrokerUnavailable,
    PromotionRefused,
    model_version_promote,
    model_version_rollback,
    training_run_cancel,
    training_run_start,
)


def _go(request: HttpRequest, url: str) -> HttpResponse:
    """Send the browser to ``url``: htmx's request follows a redirect itself, so tell htmx to navigate."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _back(request: HttpRequest, default: str) -> str:
    """Return the form's ``next`` if it is a path on this site, else ``default``."""
    wanted = request.POST.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


@require_GET
@reader_required
def run_list(request: HttpRequest) -> HttpResponse:
    context = {
        "nav": "runs",
        "page": run_page(page=request.GET.get("page")),
        "in_flight": run_in_flight(),
        "serving": serving_version(),
        "may_act": request.roles.may_administer,
    }
    return render(request, "dashboard/run_list.html", context)


def _retrain_confirm(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    """The confirm page; 503 (with Retry-After) after a start the broker refused, its message shown."""
    conf = settings.RECSITE_TRAINING
    context = {
        "nav": "runs",
        "in_flight": run_in_flight(),
        "epochs": conf["EPOCHS"],
        "search_seconds": int(conf["SEARCH_SECONDS"]),
        "search_every_days": conf["SEARCH_EVERY_DAYS"],
    }
    response = render(request, "dashboard/run_retrain.html", context, status=status)
    if status == 503:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@require_http_methods(["GET", "POST"])
@admin_required
def run_retrain(request: HttpRequest) -> HttpResponse:
    """Confirm (GET), then start a run (POST, single flight) and go to it, or to the one already in flight."""
    if request.method == "GET":
        return _retrain_confirm(request)
    # The box asks for the settings search now; unticked, the schedule decides (runs._base_options).
    options = {"search": True} if request.POST.get("search") == "on" else {}
    try:
        run, created = training_run_start(triggered_by=actor_of(request), options=options)
    except BrokerUnavailable as exc:
        # Raised by the enqueue once the run's row is committed: the service has failed
        # the run already, so the single-flight slot is free and the button works again.
        messages.error(
            request, f"Nothing is training: the task broker cannot be reached, so training run {exc.run_id} was "
            "not started. Try again in a minute.",
        )  # fmt: skip
        if request.htmx:
            # htmx swaps no 5xx answer: reload the confirm page, which shows the message.
            return HttpResponse(status=503, headers={"HX-Refresh": "true", "Retry-After": str(RETRY_AFTER_SECONDS)})
        return _retrain_confirm(request, status=503)
    if created:
        messages.success(request, f"Training run {run.pk} is queued.")
    else:
        messages.info(request, f"Training run {run.pk} is already {run.status}: it was not started twice.")
    return _go(request, reverse("dashboard:run_detail", args=[run.pk]))


@require_GET
@reader_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """Show one run; an htmx request (the 2 s poll) gets only the live partial, with 286 once the run has ended."""
    try:
        run = run_with_version(run_id=run_id)
    except TrainingRun.DoesNotExist:
        if request.htmx:
            # The poll of a run deleted meanwhile: say so and stop polling (htmx swaps
            # no 404, and would ask again every 2 s).
            return HttpResponseStopPolling('<section id="run-live"><p class="error">This training run no longer exists.</p></section>')
        raise Http404("No such training run.") from None
    loss_chart, ndcg_chart = run_curves(run)
    context = {
        "nav": "runs",
        "run": run,
        "version": version_of(run),
        "serving": serving_version(),
        "progress": run_progress(run),
        "duration": run_duration(run, now=timezone.now()),
        "loss_chart": loss_chart,
        "ndcg_chart": ndcg_chart,
        "may_act": request.roles.may_administer,
    }
    if request.htmx and not request.htmx.history_restore_request:
        context["poll"] = True
        if run.is_in_flight:
            return render(request, "dashboard/run_detail.html#run-live", context)
        # The final state still swaps in; 286 tells htmx to stop polling.
        return HttpResponseStopPolling(render_to_string("dashboard/run_detail.html#run-live", context, request))
    return render(request, "dashboard/run_detail.html", context)


@require_POST
@admin_required
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    before = get_object_or_404(TrainingRun.objects.only("pk", "status"), pk=run_id)
    run = training_run_cancel(run_id=run_id)
    if run.status == TrainingRun.Status.CANCELLED and before.status != TrainingRun.Status.CANCELLED:
        messages.success(request, f"Training run {run.pk} is cancelled.")
    elif run.status == TrainingRun.Status.RUNNING:
        messages.info(request, f"Training run {run.pk} was asked to stop: it stops within a second or two.")
    else:
        messages.warning(request, f"Training run {run.pk} had already ended ({run.status}).")
    return _go(request, reverse("dashboard:run_detail", args=[run.pk]))


@require_POST
@admin_required
def version_promote(request: HttpRequest, version_id: int) -> HttpResponse:
    """Serve this version (any status, as over the API: the gate guards automatic promotion only)."""
    version = get_object_or_404(
        ModelVersion.objects.without_id_maps().only("pk", "status", "training_run_id"), pk=version_id
    )
    back = (
        reverse("dashboard:run_detail", args=[version.training_run_id])
        if version.training_run_id
        else reverse("dashboard:run_list")
    )
    if version.status == ModelVersion.Status.PROMOTED:
        messages.info(request, f"Model version {version.pk} is already serving.")
        return _go(request, back)
    try:
        model_version_promote(version_id=version.pk, actor=actor_of(request))
    except PromotionRefused as exc:
        messages.error(request, f"Not promoted: {exc}")
    else:
        messages.success(request, f"Model version {version.pk} is now serving.")
    return _go(request, back)


@require_POST
@admin_required
def version_rollback(request: HttpRequest) -> HttpResponse:
    """Roll back from the version the form showed as serving; a second submit of that form does nothing.

    Without ``from_version`` two submits (a double click without JS, two tabs, two
    admins) would roll back two versions.
    """
    back = _back(request, reverse("dashboard:run_list"))
    serving = serving_version()
    expected = request.POST.get("from_version", "")
    if not expected.isdigit() or serving is None or serving.pk != int(expected):
        now = f"model version {serving.pk} is serving now" if serving else "no model is serving now"
        messages.warning(request, f"Not rolled back: the page showed another serving version ({now}). Check and try again.")
        return _go(request, back)
    try:
        version = model_version_rollback(actor=actor_of(request))
    except PromotionRefused as exc:
        messages.error(request, f"Not rolled back: {exc}")
    else:
        messages.success(request, f"Rolled back: model version {version.pk} is serving again.")
    return _go(request, back)


urlpatterns = [
    path("runs/", run_list, name="run_list"),
    path("runs/retrain/", run_retrain, name="run_retrain"),
    path("runs/<int:run_id>/", run_detail, name="run_detail"),
    path("runs/<int:run_id>/cancel/", run_cancel, name="run_cancel"),
    path("versions/<int:version_id>/promote/", version_promote, name="version_promote"),
    path("versions/rollback/", version_rollback, name="version_rollback"),
]
