"""The training pipeline of one run: fold, load, split, search or train, refit, evaluate, gate, save, promote.

Called by ``runs.training_run_execute`` with the claimed run and its progress writer;
it ends the run itself (rejected, failed or succeeded with its promotion, in one
transaction), and raises TrainingCancelled when a cancel or a sweep got in first.
A run that would train exactly what the promoted version was trained on (fingerprint.py)
ends succeeded before training, with no new version.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from engagement.services import engagement_fold
from training.artifacts import FOLDED_THROUGH, model_dir, model_version_load, run_artifact_name
from training.ml.artifact import save_artifact
from training.ml.data import leave_last_out, product_prior
from training.ml.loop import TrainingCancelled, train
from training.ml.metrics import evaluate_split
from training.ml.neighbours import Blend, blend_choose, blended_score_fn, neighbours_build
from training.ml.refit import refit, refit_adds_enough
from training.ml.scoring import CatalogScorer
from training.ml.search import candidates, search
from training.models import ModelPromotion, ModelVersion, TrainingRun

from .dataset import TrainingData, training_data_load
from .fingerprint import FINGERPRINT, training_fingerprint
from training.ml.evaluation import champion_score_fn, gate_decide, model_score_fn, popularity_score_fn
from .options import BOUNDS, _configs, base_options, resolved_options
from .run_state import ProgressWriter, Status, run_finish
from .versions import PromotionRefused, model_version_promote_verified, model_version_promoted, model_version_verify

logger = logging.getLogger(__name__)

REFIT_PHASE = "refitting on every training row"
BLEND_PHASE = "choosing the neighbour blend"


def training_pipeline_run(run: TrainingRun, writer: ProgressWriter) -> None:
    """Carry a claimed run from its data to its end (see the module's docstring)."""
    conf = settings.RECSITE_TRAINING
    started = time.monotonic()
    # Events the periodic fold has not reached yet belong in this model: fold them now
    # (incremental, and safe next to beat's fold: the watermark row is locked).
    writer.phase("folding new events")
    engagement_fold()
    writer.phase("loading data")
    data = training_data_load(recency=conf["TARGET_RECENCY"])
    outer = leave_last_out(data.interactions)
    test_customers = len(outer.test_customers)
    if test_customers < conf["MIN_TEST_CUSTOMERS"]:
        run_finish(
            run.pk,
            status=Status.REJECTED,
            error=(
                f"Not enough data to evaluate a model: {test_customers} customer(s) have engaged with 2 or more "
                f"products; at least {conf['MIN_TEST_CUSTOMERS']} are needed (RECSITE_MIN_TEST_CUSTOMERS)."
            ),
            metrics={"data": _data_summary(data, test_customers)},
        )
        return
    # Validation for early stopping is held out of the training rows, so the test
    # items stay unseen until the final evaluation.
    inner = leave_last_out(outer.train)
    prior = product_prior(inner.train)
    sizes = {
        "num_customers": len(data.customer_ids),
        "num_products": len(data.product_ids),
        "train_rows": len(inner.train.customer_idx),
    }
    base, search_why = base_options(run)
    base_model_config, base_train_config = _configs(base, **sizes)
    fingerprint = training_fingerprint(data=data, model_config=base_model_config, train_config=base_train_config,
                                       searched=bool(search_why))  # fmt: skip
    # A search's choice depends on its time budget, not only on its inputs: it always runs.
    if not search_why and _end_if_unchanged(run, fingerprint, data, test_customers):
        return
    # The refit (when on) trains again on the validation rows too, where they add enough.
    refit_worth_it = refit_adds_enough(train_rows=len(inner.train), all_rows=len(outer.train),
                                       min_share=conf["REFIT_MIN_SHARE"])  # fmt: skip
    # The progress bar: the refit (when it runs) fills its second half; search trials share the first.
    training_share = 0.5 if _configs(base, **sizes)[1].refit and refit_worth_it else 1.0
    trials = {"count": 1, "started": 0}

    def fit(options: dict[str, Any], deadline: float | None = None):
        share = training_share / trials["count"]
        writer.span = (share * trials["started"], share * (trials["started"] + 1))
        trials["started"] += 1
        model_config, train_config = _configs(options, **sizes)
        return train(
            model_config=model_config,
            train_config=train_config,
            train=inner.train,
            validation=inner,
            prior=prior,
            channel_weights=data.channel_weights,
            on_progress=writer,
            deadline=deadline,
        )

    search_record: dict[str, Any] | None = None
    if search_why:
        tried = candidates(base, resolved_options(base, **sizes), bounds=BOUNDS)
        trials["count"] = len(tried)
        writer.phase(f"searching settings ({len(tried)} candidates)")
        found = search(
            fit,
            tried,
            budget_seconds=conf["SEARCH_SECONDS"],
            on_trial=lambda t: writer.phase(f"searching settings: tried {t.options or 'the base options'}"),
        )
        result, chosen = found.best, found.chosen
        search_record = {
            "why": search_why,
            "budget_seconds": conf["SEARCH_SECONDS"],
            "seconds": round(found.seconds, 1),
            "chosen": chosen,
            "tried": [t.to_dict() for t in found.trials],
            "skipped": found.skipped,
        }
    else:
        writer.phase("training")
        chosen = base
        result = fit(chosen)
    model_config, train_config = _configs(chosen, **sizes)
    stopped, refit_record = result, None
    if train_config.refit and not refit_worth_it:
        refit_record = {"skipped": f"the validation rows add {len(outer.train) - len(inner.train)} to "
                                   f"{len(inner.train)} (under RECSITE_TRAINING_REFIT_MIN_SHARE, "
                                   f"{conf['REFIT_MIN_SHARE']:g}): the early-stopped model is served"}  # fmt: skip
    elif train_config.refit:
        # The validation items are a customer's newest engagement before the test item:
        # the served model trains on them too, for the epochs early stopping kept.
        writer.span = (training_share, 1.0)
        writer.phase(REFIT_PHASE)
        refit_started = time.monotonic()
        result, prior = refit(
            model_config=model_config,
            train_config=train_config,
            rows=outer.train,
            epochs=stopped.best_epoch,
            channel_weights=data.channel_weights,
            on_progress=writer.quiet,
        )
        refit_record = {"epochs": len(result.history), "rows": len(outer.train),
                        "seconds": round(time.monotonic() - refit_started, 2)}  # fmt: skip
    blend_record = None
    if train_config.neighbours:
        # How much of products engaged with together the ranking blends in, chosen with the
        # early-stopped model on its own validation split (none where it does not help).
        writer.span = (1.0, 1.0)  # training is over: the bar stays full (it only moves forward)
        writer.phase(BLEND_PHASE)
        blend_started = time.monotonic()
        stopped_scorer = CatalogScorer(stopped.model, product_prior(inner.train), data.channel_weights)
        chosen_blend, blend_trials = blend_choose(
            model_score_fn(stopped_scorer), inner, sampled_negatives=conf["SAMPLED_NEGATIVES"],
            seed=train_config.seed, max_customers=train_config.max_validation_customers,
        )  # fmt: skip
        blend_record = {"chosen": chosen_blend, "tried": [t.to_dict() for t in blend_trials],
                        "seconds": round(time.monotonic() - blend_started, 2)}  # fmt: skip
    train_seconds = time.monotonic() - started
    writer.phase("evaluating")
    # The gate's model: the trained weights with every customer folded from the rows
    # before their test item, and neighbours of those rows. The saved model folds them
    # from every row, and its neighbours are every row's (docs/model.md).
    chosen_blend = blend_record["chosen"] if blend_record else None
    metrics = _evaluate(result.refold(outer.train), prior, data, outer, train_config.seed,
                        blend=_blend_of(chosen_blend, outer.train))  # fmt: skip
    metrics["data"] = _data_summary(data, test_customers)
    metrics["training"] = {
        "seconds": round(train_seconds, 2),
        "best_epoch": stopped.best_epoch,
        "epochs_run": len(stopped.history),
        "stopped_early": stopped.stopped_early,
        "device": result.device,
        "examples_per_second": round(result.examples_per_second),
        "refit": refit_record,  # None (REFIT off) or {"skipped": why}: the early-stopped model is served
    }
    metrics["blend"] = blend_record  # None: NEIGHBOURS off; "chosen" None: the model alone ranks best
    decision = gate_decide(
        candidate=metrics["model"],
        popularity=metrics["popularity"],
        champion=metrics.get("champion"),
        tolerance=conf["PROMOTION_TOLERANCE"],
    )
    metrics["gate"] = {"promote": decision.promote, "reason": decision.reason}
    metrics["settings"] = {"options": chosen, "searched": search_record is not None}
    if search_record is not None:
        metrics["search"] = search_record
    writer.phase("saving")
    version = _save_version(
        run, result.refold(data.interactions), model_config, train_config, prior, data, metrics,
        status=ModelVersion.Status.CANDIDATE if decision.promote else ModelVersion.Status.REJECTED,
        blend=_blend_of(chosen_blend, data.interactions), fingerprint=fingerprint,
    )  # fmt: skip
    metrics["total_seconds"] = round(time.monotonic() - started, 2)
    common = {"metrics": metrics, "history": stopped.history}
    if not decision.promote:
        run_finish(run.pk, status=Status.REJECTED, error=decision.reason, **common)
        return
    try:
        model_version_verify(version)  # slow I/O: before the transaction below
    except PromotionRefused as exc:
        run_finish(run.pk, status=Status.FAILED, error=str(exc), **common)
        return
    # Promote and end the run in one transaction, holding the run's row: a cancel or a
    # sweep that got in first wins (nothing is promoted), and none can slip in between.
    with transaction.atomic():
        still_ours = TrainingRun.objects.select_for_update().filter(
            pk=run.pk, status=Status.RUNNING, cancel_requested_at__isnull=True
        )
        if not still_ours.exists():
            raise TrainingCancelled(f"Training run {run.pk} was cancelled or swept before its promotion.")
        model_version_promote_verified(
            version_id=version.pk, actor=f"training-run:{run.pk}", action=ModelPromotion.Action.PROMOTE
        )
        run_finish(run.pk, status=Status.SUCCEEDED, **common)


def _end_if_unchanged(run: TrainingRun, fingerprint: str, data: TrainingData, test_customers: int) -> bool:
    """End the run, succeeded with no new version, if the promoted version was trained on ``fingerprint``.

    Only while that version's artifact still loads: a lost or damaged one is trained again.
    """
    promoted = model_version_promoted()
    if promoted is None or promoted.config.get(FINGERPRINT) != fingerprint:
        return False
    try:
        model_version_verify(promoted)
    except PromotionRefused as exc:
        logger.warning("Training run %s trains again: %s", run.pk, exc)
        return False
    run_finish(
        run.pk,
        status=Status.SUCCEEDED,
        error=(
            f"Nothing changed since model version {promoted.pk} (the same data and settings): no new version was "
            f"trained, and version {promoted.pk} keeps serving."
        ),
        metrics={"unchanged": promoted.pk, "fingerprint": fingerprint, "data": _data_summary(data, test_customers)},
    )
    return True


def _data_summary(data: TrainingData, test_customers: int) -> dict[str, Any]:
    return {
        "target_recency": settings.RECSITE_TRAINING["TARGET_RECENCY"],
        "customers": len(data.customer_ids),
        "products": len(data.product_ids),
        "pairs": len(data.interactions.customer_idx),
        "test_customers": test_customers,
        "as_of": data.as_of.isoformat() if data.as_of else None,
    }


def _blend_of(chosen: dict[str, float] | None, rows) -> Blend | None:
    """The chosen blend with neighbours built from ``rows``; None for the model alone."""
    if chosen is None:
        return None
    return Blend(neighbours_build(rows), chosen["weight"], chosen["decay"])


def _evaluate(model, prior, data: TrainingData, outer, seed: int, *, blend: Blend | None) -> dict[str, Any]:
    """The candidate, popularity and the serving model, on the same split, ranked as the API ranks."""
    conf = settings.RECSITE_TRAINING
    kwargs = {"split": outer, "sampled_negatives": conf["SAMPLED_NEGATIVES"], "seed": seed}
    scorer = CatalogScorer(model, prior, data.channel_weights)
    metrics: dict[str, Any] = {
        "model": evaluate_split(blended_score_fn(model_score_fn(scorer), blend, outer.train), **kwargs),
        "popularity": evaluate_split(popularity_score_fn(outer), **kwargs),
    }
    champion = model_version_promoted()
    if champion is not None:
        try:
            loaded = model_version_load(champion)
        except Exception as exc:  # a broken champion cannot veto; say so in the metrics
            logger.warning("Promoted model version %s cannot be loaded for comparison: %s", champion.pk, exc)
            metrics["champion_error"] = f"version {champion.pk}: {exc}"
        else:
            score = champion_score_fn(loaded, split=outer, customer_ids=data.customer_ids, product_ids=data.product_ids)
            metrics["champion"] = {"version": champion.pk, **evaluate_split(score, **kwargs)}
    return metrics


def _save_version(
    run, model, model_config, train_config, prior, data: TrainingData, metrics, *, status: str, blend: Blend | None,
    fingerprint: str,
) -> ModelVersion:
    relative = run_artifact_name(run.pk, timezone.now())
    # The fingerprint: what the run trained on and with, for the next run to compare (fingerprint.py).
    config = {"model": model_config.to_dict(), "train": train_config.to_dict(), FINGERPRINT: fingerprint}
    path = model_dir() / relative
    # Writing the file is slow I/O: done before, and outside, any transaction.
    sha256 = save_artifact(
        path,
        model=model,
        config=model_config,
        prior=prior,
        customer_ids=data.customer_ids,
        product_ids=data.product_ids,
        channel_weights=data.channel_weights,
        metrics=metrics,
        extra={"training_run": run.pk, "train": train_config.to_dict(), "as_of": metrics["data"]["as_of"],
               # Serving folds a customer with events after this one (training.serving).
               FOLDED_THROUGH: data.folded_through},  # fmt: skip
        blend=blend,
    )
    try:
        return ModelVersion.objects.create(
            training_run=run,
            status=status,
            artifact_path=relative,
            sha256=sha256,
            config=config,
            customer_ids=data.customer_ids,
            product_ids=data.product_ids,
            metrics=metrics,
        )
    except BaseException:
        # No row, no file. A kill -9 right here still leaves the file: the sweeper
        # deletes it once the run has ended (_orphaned_artifacts_sweep).
        path.unlink(missing_ok=True)
        raise
