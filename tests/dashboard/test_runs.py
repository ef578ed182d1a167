"""The training runs pages: who may read and act, Retrain's single flight, the live run page, the actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from training.models import ModelPromotion, ModelVersion, TrainingRun
from training.services import artifact_abspath, model_version_promote

HTMX = {"HX-Request": "true"}
CUSTOMERS = ["c1", "c2", "c3"]
PRODUCTS = ["p1", "p2", "p3", "p4"]


def _metrics(model: float, popularity: float, champion: float | None = None) -> dict:
    found = {
        "model": {"full": {"ndcg@10": model, "hr@10": 0.5}, "sampled": {"ndcg@10": 0.6}},
        "popularity": {"full": {"ndcg@10": popularity, "hr@10": 0.4}, "sampled": {"ndcg@10": 0.5}},
        "gate": {"promote": model > popularity, "reason": "NDCG@10 beats popularity's."},
    }
    if champion is not None:
        found["champion"] = {"version": 1, "full": {"ndcg@10": champion}}
    return found


def _ended_run(status: str = TrainingRun.Status.SUCCEEDED, **fields) -> TrainingRun:
    now = timezone.now()
    defaults = {
        "triggered_by": "user:ada",
        "started_at": now - timedelta(minutes=3, seconds=5),
        "finished_at": now,
        "progress": {"phase": "saving"},
        "history": [
            {"epoch": 1, "loss": 0.61, "validation_ndcg@10": 0.10},
            {"epoch": 2, "loss": 0.52, "validation_ndcg@10": 0.14},
            {"epoch": 3, "loss": 0.47, "validation_ndcg@10": 0.15},
        ],
        "metrics": _metrics(0.1512, 0.0874, champion=0.1433),
    }
    return TrainingRun.objects.create(status=status, **{**defaults, **fields})


def _running_run(**fields) -> TrainingRun:
    defaults = {
        "triggered_by": "user:ada",
        "started_at": timezone.now() - timedelta(seconds=40),
        "progress": {
            "phase": "training", "epoch": 2, "epochs": 4, "step": 5, "steps": 10,
            "loss": 0.5, "eta_seconds": 75.2, "validation_ndcg": 0.1234,
        },  # fmt: skip
        "history": [{"epoch": 1, "loss": 0.61, "validation_ndcg@10": 0.1234}],
    }
    return TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, **{**defaults, **fields})


def _bare_version(run: TrainingRun | None = None, **fields) -> ModelVersion:
    """A version row without an artifact: enough for pages that only show it."""
    return ModelVersion.objects.create(
        training_run=run, artifact_path="none.pt", sha256="0" * 64, metrics=run.metrics if run else {}, **fields
    )


@pytest.fixture
def sent(monkeypatch) -> list:
    """Record retrain tasks instead of sending them: no worker runs in these tests."""
    calls = []
    monkeypatch.setattr("training.queue.retrain_send", lambda run_id, task_id: calls.append((run_id, task_id)))
    return calls


@pytest.fixture
def promoted_then_candidate(make_version) -> tuple[ModelVersion, ModelVersion]:
    """Version 1 serving (promoted through the service, so a rollback has a trail), version 2 a candidate of a run."""
    first = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)
    model_version_promote(version_id=first.pk, actor="user:ada")
    run = _ended_run(TrainingRun.Status.REJECTED, error="NDCG@10 0.0800 is not above popularity's 0.0874.")
    second = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2, training_run=run)
    return first, second


def _controls(html: str) -> set[str]:
    ids = ('id="retrain"', 'id="run-cancel"', 'id="version-promote"', 'id="version-rollback"')
    return {found for found in ids if found in html}


# --- who may read and act ---


def test_an_anonymous_visitor_is_sent_to_the_login_page(anonymous_web):
    run = _ended_run()
    for url in (reverse("dashboard:run_list"), reverse("dashboard:run_detail", args=[run.pk]),
                reverse("dashboard:run_retrain")):  # fmt: skip
        response = anonymous_web.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url


def test_an_anonymous_poll_sends_the_whole_browser_to_the_login_page(anonymous_web):
    run = _running_run()

    response = anonymous_web.get(reverse("dashboard:run_detail", args=[run.pk]), headers=HTMX)

    assert response.status_code == 200 and response["HX-Redirect"].startswith(reverse("login"))


def test_a_signed_in_outsider_gets_403(outsider_web):
    run = _ended_run()

    assert outsider_web.get(reverse("dashboard:run_list")).status_code == 403
    assert outsider_web.get(reverse("dashboard:run_detail", args=[run.pk])).status_code == 403


def test_a_merchandiser_reads_the_list_and_the_run_pages(merchandiser_web):
    ended = _ended_run()
    _bare_version(ended, status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())
    running = _running_run()

    listing = merchandiser_web.get(reverse("dashboard:run_list"))
    pages = [merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])) for run in (ended, running)]

    assert listing.status_code == 200 and f'data-run="{ended.pk}"' in listing.text
    assert [page.status_code for page in pages] == [200, 200]


def test_a_merchandiser_sees_no_retrain_cancel_promote_or_rollback_controls(merchandiser_web):
    promoted = _bare_version(_ended_run(), status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())
    candidate = _bare_version(_ended_run(TrainingRun.Status.REJECTED, error="Below popularity."))
    running = _running_run()

    pages = [
        merchandiser_web.get(reverse("dashboard:run_list")).text,
        *(merchandiser_web.get(reverse("dashboard:run_detail", args=[v.training_run_id])).text
          for v in (promoted, candidate)),
        merchandiser_web.get(reverse("dashboard:run_detail", args=[running.pk])).text,
    ]  # fmt: skip

    assert [_controls(page) for page in pages] == [set(), set(), set(), set()]


def test_an_admin_sees_each_control_where_it_applies(admin_web):
    promoted = _bare_version(_ended_run(), status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())
    candidate = _bare_version(_ended_run(TrainingRun.Status.REJECTED, error="Below popularity."))
    running = _running_run()

    def controls(url: str) -> set[str]:
        return _controls(admin_web.get(url).text)

    assert controls(reverse("dashboard:run_list")) == {'id="retrain"', 'id="version-rollback"'}
    assert controls(reverse("dashboard:run_detail", args=[promoted.training_run_id])) == {'id="version-rollback"'}
    assert controls(reverse("dashboard:run_detail", args=[candidate.training_run_id])) == {'id="version-promote"'}
    assert controls(reverse("dashboard:run_detail", args=[running.pk])) == {'id="run-cancel"'}


def test_a_merchandisers_forged_actions_get_403_and_change_nothing(merchandiser_web, promoted_then_candidate, sent):
    first, second = promoted_then_candidate
    running = _running_run()

    answers = [
        merchandiser_web.get(reverse("dashboard:run_retrain")).status_code,
        merchandiser_web.post(reverse("dashboard:run_retrain")).status_code,
        merchandiser_web.post(reverse("dashboard:run_cancel", args=[running.pk])).status_code,
        merchandiser_web.post(reverse("dashboard:version_promote", args=[second.pk])).status_code,
        merchandiser_web.post(reverse("dashboard:version_rollback")).status_code,
    ]

    assert answers == [403] * 5
    assert TrainingRun.objects.count() == 2 and sent == []
    running.refresh_from_db()
    assert running.status == TrainingRun.Status.RUNNING and running.cancel_requested_at is None
    assert ModelVersion.objects.get(status=ModelVersion.Status.PROMOTED).pk == first.pk


def test_the_actions_refuse_a_get(admin_web):
    run = _running_run()

    assert admin_web.get(reverse("dashboard:run_cancel", args=[run.pk])).status_code == 405
    assert admin_web.get(reverse("dashboard:version_rollback")).status_code == 405


def test_a_run_that_does_not_exist_is_404(admin_web):
    assert admin_web.get(reverse("dashboard:run_detail", args=[999])).status_code == 404
    assert admin_web.post(reverse("dashboard:run_cancel", args=[999])).status_code == 404
    assert admin_web.post(reverse("dashboard:version_promote", args=[999])).status_code == 404


# --- Retrain ---


def test_an_admin_retrains_through_the_confirm_step_and_lands_on_the_run(admin_web, sent):
    listing = admin_web.get(reverse("dashboard:run_list")).text
    confirm = admin_web.get(reverse("dashboard:run_retrain"))

    assert f'href="{reverse("dashboard:run_retrain")}" id="retrain"' in listing
    assert not TrainingRun.objects.exists()  # the button only leads to the confirm step
    assert 'id="retrain-confirm"' in confirm.text and "Start training" in confirm.text
    assert 'hx-disabled-elt="#retrain-confirm"' in confirm.text

    response = admin_web.post(reverse("dashboard:run_retrain"), follow=True)

    run = TrainingRun.objects.get()
    assert response.redirect_chain == [(reverse("dashboard:run_detail", args=[run.pk]), 302)]
    assert run.status == TrainingRun.Status.QUEUED and run.triggered_by == "user:ada"
    assert f"Training run {run.pk} is queued." in response.text
    assert '<span id="run-status" class="status status-queued">queued</span>' in response.text


def test_a_second_retrain_while_a_run_is_in_flight_starts_none_and_lands_on_that_run(admin_web, sent):
    first = admin_web.post(reverse("dashboard:run_retrain"))
    second = admin_web.post(reverse("dashboard:run_retrain"), follow=True)

    run = TrainingRun.objects.get()
    assert first["Location"] == reverse("dashboard:run_detail", args=[run.pk])
    assert second.redirect_chain == [(reverse("dashboard:run_detail", args=[run.pk]), 302)]
    assert f"Training run {run.pk} is already queued: it was not started twice." in second.text


def test_a_double_click_sends_one_task(admin_web, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_web.post(reverse("dashboard:run_retrain"), headers=HTMX)
        admin_web.post(reverse("dashboard:run_retrain"), headers=HTMX)

    run = TrainingRun.objects.get()
    assert sent == [(run.pk, run.task_id)]


def test_an_htmx_retrain_sends_the_browser_to_the_run_page(admin_web, sent):
    running = _running_run()

    response = admin_web.post(reverse("dashboard:run_retrain"), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("dashboard:run_detail", args=[running.pk])
    assert TrainingRun.objects.count() == 1


def test_a_retrain_with_the_broker_down_fails_the_run_and_says_so(admin_web, monkeypatch):
    def down(run_id, task_id):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr("training.queue.retrain_send", down)
    # In production the request runs in autocommit, so the enqueue happens inside it; the
    # test's transaction would defer it past the request.
    monkeypatch.setattr("django.db.transaction.on_commit", lambda func, using=None, robust=False: func())

    response = admin_web.post(reverse("dashboard:run_retrain"))

    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "the task broker cannot be reached" in response.text
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED


def test_the_confirm_step_names_the_run_in_flight(admin_web):
    running = _running_run()

    page = admin_web.get(reverse("dashboard:run_retrain")).text

    assert 'id="run-in-flight"' in page and reverse("dashboard:run_detail", args=[running.pk]) in page


# --- the list ---


def test_the_list_shows_status_trigger_duration_and_the_gate_metric_next_to_populars(merchandiser_web):
    run = _ended_run()
    _bare_version(run, status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())
    _ended_run(TrainingRun.Status.FAILED, metrics={}, history=[], error="Boom.")

    page = merchandiser_web.get(reverse("dashboard:run_list")).text

    row = page[page.index(f'data-run="{run.pk}"') :].split("</tr>")[0]
    assert "status-succeeded" in row and "user:ada" in row and "3 min 05 s" in row
    assert "0.1512" in row and "0.0874" in row and "0.1433" in row and "promoted" in row
    assert "Serving:" in page


def test_the_list_shows_25_runs_a_page(merchandiser_web):
    TrainingRun.objects.bulk_create(
        TrainingRun(triggered_by=f"command:train {i}", status=TrainingRun.Status.FAILED) for i in range(30)
    )

    first = merchandiser_web.get(reverse("dashboard:run_list")).text
    second = merchandiser_web.get(reverse("dashboard:run_list"), {"page": 2}).text

    assert first.count("data-run=") == 25 and second.count("data-run=") == 5
    assert 'href="?page=2"' in first and "Page 2 of 2 (30 runs)" in second


# --- the run page ---


def test_the_run_page_shows_progress_epoch_loss_and_eta_while_running(merchandiser_web):
    run = _running_run()

    page = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])).text

    url = reverse("dashboard:run_detail", args=[run.pk])
    assert f'<section id="run-live" hx-get="{url}" hx-trigger="every 2s" hx-swap="outerHTML">' in page
    assert '<span id="run-status" class="status status-running">running</span>' in page
    assert '<progress id="run-progress" value="15" max="40">' in page  # epoch 2 step 5 of 4 x 10
    assert "Epoch 2 of 4, step 5 of 10" in page and '<span id="run-loss">0.5000</span>' in page
    assert '<span id="run-eta">1 min 15 s</span>' in page


def test_while_early_stopping_trains_the_page_says_when_it_will_end(merchandiser_web):
    # The bar counts every epoch the run may train; early stopping ends it sooner, and the
    # bar jumps to the end: the page says after which epoch, unless validation improves.
    progress = {"phase": "training", "epoch": 5, "epochs": 20, "step": 3, "steps": 10, "loss": 0.5,
                "eta_seconds": 300.0, "validation_ndcg": 0.12, "best_epoch": 3, "patience": 3}  # fmt: skip
    run = _running_run(progress=progress)
    url = reverse("dashboard:run_detail", args=[run.pk])

    page = merchandiser_web.get(url).text
    TrainingRun.objects.filter(pk=run.pk).update(
        progress={**progress, "phase": "refitting on every training row", "best_epoch": 0, "patience": 0}
    )
    refit_page = merchandiser_web.get(url).text

    assert "Epoch 5 of at most 20, step 3 of 10" in page and '<span id="run-eta">at most 5 min 00 s</span>' in page
    assert "training ends after epoch 6 unless validation NDCG@10 beats epoch 3" in page
    assert "Epoch 5 of 20, step 3 of 10" in refit_page and "run-early-stop" not in refit_page


def test_the_queued_flash_stays_while_queued_and_the_poll_clears_it_once_the_run_has_moved_on(admin_web, sent):
    landing = admin_web.post(reverse("dashboard:run_retrain"), follow=True)
    run = TrainingRun.objects.get()
    url = reverse("dashboard:run_detail", args=[run.pk])
    clear = '<div id="flashes" hx-swap-oob="true"></div>'

    assert f"Training run {run.pk} is queued." in landing.text and clear not in landing.text
    assert clear not in admin_web.get(url, headers=HTMX).text  # still queued: it still says how things are
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING, started_at=timezone.now())
    assert clear in admin_web.get(url, headers=HTMX).text
    assert clear not in admin_web.get(url).text  # a whole page has its own (empty) flashes box


def test_the_poll_gets_only_the_fragment_200_while_running_then_286_once_ended(merchandiser_web):
    run = _running_run()
    url = reverse("dashboard:run_detail", args=[run.pk])

    running = merchandiser_web.get(url, headers=HTMX)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now(), progress={"phase": "saving"}
    )
    ended = merchandiser_web.get(url, headers=HTMX)

    assert running.status_code == 200 and ended.status_code == 286
    for response in (running, ended):
        assert response.text.lstrip().startswith('<section id="run-live"')
        assert "<html" not in response.text and "<nav" not in response.text
    assert 'hx-trigger="every 2s"' in running.text and "hx-trigger" not in ended.text
    assert '<span id="run-status" class="status status-succeeded">succeeded</span>' in ended.text
    assert '<progress id="run-progress" value="1" max="1">' in ended.text


def test_a_history_restore_gets_the_whole_page(merchandiser_web):
    run = _running_run()

    response = merchandiser_web.get(
        reverse("dashboard:run_detail", args=[run.pk]), headers={**HTMX, "HX-History-Restore-Request": "true"}
    )

    assert "<html" in response.text


def test_an_ended_run_page_shows_curves_and_metrics_against_popularity_and_the_model_before(merchandiser_web):
    run = _ended_run()
    _bare_version(run, status=ModelVersion.Status.PROMOTED, promoted_at=timezone.now())

    page = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])).text

    assert "hx-trigger" not in page and '<progress id="run-progress" value="1" max="1">' in page
    assert "Training loss per epoch" in page and "Validation NDCG@10 per epoch" in page
    assert page.count('<polyline class="series"') == 2
    assert all(f'data-ranker="{key}"' in page for key in ("model", "popularity", "champion"))
    assert "Last epoch 3;" in page and '<span id="run-loss">0.4700</span>' in page and "run-eta" not in page
    assert '<span id="version-status" class="status status-promoted">promoted</span>' in page


def test_the_run_page_says_why_a_run_was_not_refit(merchandiser_web):
    metrics = _metrics(0.1512, 0.0874, champion=0.1433)
    why = "the validation rows add 942 to 97,173 (under RECSITE_TRAINING_REFIT_MIN_SHARE, 0.05)"
    metrics["training"] = {"seconds": 90.0, "best_epoch": 3, "epochs_run": 3, "stopped_early": False,
                           "device": "cpu", "examples_per_second": 41000, "refit": {"skipped": why}}  # fmt: skip
    run = _ended_run(metrics=metrics)

    page = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])).text

    assert f'<span id="run-refit">not refit: {why}</span>' in page and "then refit on" not in page


@pytest.mark.parametrize(
    "status, error",
    [
        (TrainingRun.Status.FAILED, "RuntimeError: CUDA out of memory"),
        (TrainingRun.Status.REJECTED, "NDCG@10 0.0800 is not above popularity's 0.0874."),
    ],
)
def test_a_failed_or_rejected_run_shows_its_error(merchandiser_web, status, error):
    run = _ended_run(status, error=error)

    page = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])).text

    assert f'<span id="run-status" class="status status-{status}">{status}</span>' in page
    assert '<p id="run-error" class="error">' in page
    assert page.split('<p id="run-error" class="error">')[1].split("</p>")[0] == error.replace("'", "&#x27;")


def test_a_queued_run_page_has_an_empty_bar_and_waits_for_a_worker(merchandiser_web):
    run = TrainingRun.objects.create(triggered_by="user:ada")

    page = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk])).text

    assert '<progress id="run-progress" value="0" max="1">' in page and "waiting for a worker" in page


# --- cancel, promote, roll back ---


def test_an_admin_cancels_a_queued_run(admin_web):
    run = TrainingRun.objects.create(triggered_by="user:ada")

    response = admin_web.post(reverse("dashboard:run_cancel", args=[run.pk]), follow=True)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert response.redirect_chain == [(reverse("dashboard:run_detail", args=[run.pk]), 302)]
    assert f"Training run {run.pk} is cancelled." in response.text


def test_cancelling_a_running_run_asks_it_to_stop(admin_web):
    run = _running_run()

    response = admin_web.post(reverse("dashboard:run_cancel", args=[run.pk]), headers=HTMX)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.cancel_requested_at is not None
    assert response["HX-Redirect"] == reverse("dashboard:run_detail", args=[run.pk])
    page = admin_web.get(response["HX-Redirect"]).text
    assert "was asked to stop" in page and "cancel requested" in page and 'id="run-cancel"' not in page


def test_cancelling_an_ended_run_changes_nothing_and_says_so(admin_web):
    run = _ended_run()

    response = admin_web.post(reverse("dashboard:run_cancel", args=[run.pk]), follow=True)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert f"Training run {run.pk} had already ended (succeeded)." in response.text


def test_an_admin_promotes_a_version_then_rolls_back(admin_web, promoted_then_candidate):
    first, second = promoted_then_candidate
    run_page = reverse("dashboard:run_detail", args=[second.training_run_id])

    promoted = admin_web.post(reverse("dashboard:version_promote", args=[second.pk]), follow=True)

    assert promoted.redirect_chain == [(run_page, 302)]
    assert f"Model version {second.pk} is now serving." in promoted.text
    assert ModelVersion.objects.get(status=ModelVersion.Status.PROMOTED).pk == second.pk
    assert ModelPromotion.objects.filter(model_version=second, actor="user:ada").exists()

    rolled_back = admin_web.post(
        reverse("dashboard:version_rollback"), {"next": run_page, "from_version": second.pk}, follow=True
    )

    assert rolled_back.redirect_chain == [(run_page, 302)]
    assert f"Rolled back: model version {first.pk} is serving again." in rolled_back.text
    assert ModelVersion.objects.get(status=ModelVersion.Status.PROMOTED).pk == first.pk


def test_a_second_submit_of_the_same_rollback_form_rolls_back_nothing_more(admin_web, make_version):
    versions = [make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=i) for i in range(3)]
    for version in versions:
        model_version_promote(version_id=version.pk, actor="user:ada")
    form = {"from_version": versions[2].pk}

    admin_web.post(reverse("dashboard:version_rollback"), form)
    again = admin_web.post(reverse("dashboard:version_rollback"), form, follow=True)

    assert ModelVersion.objects.get(status=ModelVersion.Status.PROMOTED).pk == versions[1].pk
    assert f"Not rolled back: the page showed another serving version (model version {versions[1].pk}" in again.text


def test_a_refused_promotion_is_shown_as_an_error_message(admin_web, promoted_then_candidate):
    first, second = promoted_then_candidate
    artifact_abspath(second).write_bytes(b"not the model that was stored")

    response = admin_web.post(reverse("dashboard:version_promote", args=[second.pk]), follow=True)

    assert '<p class="flash error" role="status">Not promoted: Model version' in response.text
    assert ModelVersion.objects.get(status=ModelVersion.Status.PROMOTED).pk == first.pk


def test_a_rollback_with_nothing_before_is_shown_as_an_error_message(admin_web, make_version):
    only = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS)
    model_version_promote(version_id=only.pk, actor="user:ada")

    response = admin_web.post(reverse("dashboard:version_rollback"), {"from_version": only.pk}, follow=True)

    assert response.redirect_chain == [(reverse("dashboard:run_list"), 302)]
    assert "Not rolled back: Model version" in response.text and "nothing served before it" in response.text


def test_the_poll_of_a_run_that_no_longer_exists_stops(merchandiser_web):
    response = merchandiser_web.get(reverse("dashboard:run_detail", args=[999_999]), headers=HTMX)

    assert response.status_code == 286 and "no longer exists" in response.text


def test_a_poll_for_a_user_who_lost_the_right_reloads_the_page(outsider_web):
    response = outsider_web.get(reverse("dashboard:run_detail", args=[1]), headers=HTMX)

    assert response.status_code == 200 and response["HX-Refresh"] == "true"


def test_a_rollback_never_redirects_off_site(admin_web):
    response = admin_web.post(reverse("dashboard:version_rollback"), {"next": "https://evil.example/"})

    assert response["Location"] == reverse("dashboard:run_list")


def test_the_actions_need_the_csrf_token(csrf_web, admin_user):
    run = _running_run()

    response = csrf_web(admin_user).post(reverse("dashboard:run_cancel", args=[run.pk]))

    assert response.status_code == 403 and TrainingRun.objects.get().cancel_requested_at is None


# --- speed: bounded queries ---


def _many_runs(count: int) -> None:
    for i in range(count):
        run = _ended_run(TrainingRun.Status.REJECTED if i % 2 else TrainingRun.Status.SUCCEEDED)
        _bare_version(run, status=ModelVersion.Status.RETIRED if i else ModelVersion.Status.PROMOTED)
    _running_run()


@pytest.mark.parametrize("who", ["admin", "merchandiser"])
def test_the_list_takes_a_fixed_number_of_queries(who, admin_web, merchandiser_web, django_assert_max_num_queries):
    _many_runs(12)
    web = admin_web if who == "admin" else merchandiser_web

    # session, user, roles, count, the page (runs joined to their versions), the run in
    # flight, the serving version
    with django_assert_max_num_queries(7):
        response = web.get(reverse("dashboard:run_list"))

    assert response.status_code == 200 and response.text.count("data-run=") == 13


@pytest.mark.parametrize("htmx", [False, True])
def test_the_run_page_and_its_poll_take_a_fixed_number_of_queries(
    htmx, merchandiser_web, django_assert_max_num_queries
):
    _many_runs(12)
    run = TrainingRun.objects.get(status=TrainingRun.Status.RUNNING)

    # session, user, roles, the run joined to its version, the serving version
    with django_assert_max_num_queries(5):
        response = merchandiser_web.get(reverse("dashboard:run_detail", args=[run.pk]), headers=HTMX if htmx else {})

    assert response.status_code == 200


def test_the_progress_bar_only_moves_forward_through_training_the_refit_and_the_end():
    from dashboard.selectors.runs import run_progress

    def step(epoch, step_, epochs, span, phase="training"):
        return {"phase": phase, "epoch": epoch, "epochs": epochs, "step": step_, "steps": 10, "span": span}

    stages = [
        {"phase": "loading data"},
        step(1, 1, 20, [0, 0.5]),
        step(6, 10, 20, [0, 0.5]),  # early stopping ends here, far from epoch 20
        {"phase": "refitting on every training row", "span": [0.5, 1]},
        step(1, 5, 3, [0.5, 1], "refitting on every training row"),
        step(3, 10, 3, [0.5, 1], "refitting on every training row"),
        {"phase": "evaluating"},
    ]
    run = TrainingRun(status=TrainingRun.Status.RUNNING, history=[{"epoch": 1, "loss": 0.5}])
    seen = []
    for progress in stages:
        run.progress = progress
        shown = run_progress(run)
        seen.append(shown.done / shown.total)

    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 1, seen
    assert seen[3] == 0.5 and 0.5 < seen[4] < seen[5] == 1
    run.progress = {**stages[1], "span": [0.9, 0.1]}  # malformed: the stage's own fraction
    assert run_progress(run).done / run_progress(run).total == 1 / 200  # epoch 1, step 1 of 20 x 10
