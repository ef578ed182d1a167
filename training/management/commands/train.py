"""Train, evaluate and (if the gate agrees) promote a model, in this process, with a progress line."""

from __future__ import annotations

import argparse
import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from training.ml.loop import Progress
from training.services import (
    TrainingOptionsInvalid,
    training_run_execute,
    training_run_start,
)
from training.services.options import OPTIONS


class _ProgressBars:
    """A tqdm bar per epoch (tqdm turns itself off when stderr is not a terminal)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.bar: tqdm | None = None
        self.epoch = 0

    def __call__(self, p: Progress) -> None:
        if p.epoch != self.epoch:
            self.close()
            self.epoch = p.epoch
            self.bar = tqdm(total=p.steps, desc=f"epoch {p.epoch}/{p.epochs}", unit=" steps", file=self.stream,
                            disable=None)  # fmt: skip
        self.bar.update(p.step - self.bar.n)
        postfix = {"loss": f"{p.loss:.4f}", "eta": f"{p.eta_seconds:.0f}s"}
        if p.validation_ndcg is not None:
            postfix["val_ndcg@10"] = f"{p.validation_ndcg:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Command(BaseCommand):
    help = (
        "Train RecommenderNN on the engagement table now, print its metrics next to popularity's, and promote "
        "it if it passes the gate. The Celery task 'retrain' does the same in a worker."
    )

    def add_arguments(self, parser):
        for name, (kind, _) in OPTIONS.items():
            flag = "--" + name.replace("_", "-")
            if kind is bool:
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, dest=name)
            else:
                parser.add_argument(flag, type=kind, default=None, dest=name, help="(settings.RECSITE_TRAINING)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Also print the run's metrics as JSON.")

    def handle(self, *args, as_json: bool = False, **options):
        chosen = {name: options[name] for name in OPTIONS if options.get(name) is not None}
        try:
            run, created = training_run_start(triggered_by="command:train", options=chosen, enqueue=False)
        except TrainingOptionsInvalid as exc:
            raise CommandError(str(exc)) from exc
        if not created:
            raise CommandError(f"Training run {run.pk} is already {run.status}; wait for it or cancel it.")
        self.stderr.write(f"Training run {run.pk}: loading engagement ...")
        bars = _ProgressBars(sys.stderr)
        try:
            run = training_run_execute(run_id=run.pk, worker="manage.py train", echo=bars)
        finally:
            bars.close()
        self._report(run)
        if as_json:
            self.stdout.write(json.dumps(run.metrics, indent=2, sort_keys=True))
        if run.status not in ("succeeded", "rejected"):
            raise CommandError(f"Training run {run.pk} {run.status}: {run.error}")

    def _report(self, run) -> None:
        metrics = run.metrics
        rows = [("RecommenderNN", metrics.get("model")), ("popularity", metrics.get("popularity"))]
        if "champion" in metrics:
            rows.append((f"promoted (v{metrics['champion']['version']})", metrics["champion"]))
        data = metrics.get("data", {})
        lines = [
            "",
            (f"Data: {data.get('customers', 0)} customers, {data.get('products', 0)} products, "
            f"{data.get('pairs', 0)} engaged pairs; {data.get('test_customers', 0)} customers held out "
            "(leave-last-out)."),
        ]
        if metrics.get("model"):
            lines += [
                "",
                f"{'':24}{'sampled (1 + 99)':>22}{'full ranking':>36}",
                f"{'':24}{'HR@10':>11}{'NDCG@10':>11}{'HR@10':>12}{'NDCG@10':>12}{'Recall@20':>12}",
            ]
            for name, m in rows:
                lines.append(
                    f"{name:24}{m['sampled']['hr@10']:>11.4f}{m['sampled']['ndcg@10']:>11.4f}"
                    f"{m['full']['hr@10']:>12.4f}{m['full']['ndcg@10']:>12.4f}{m['full']['recall@20']:>12.4f}"
                )
            t = metrics.get("training", {})
            lines += [
                "",
                (f"Training: {t.get('seconds', 0):.1f} s on {t.get('device', '?')}, {t.get('epochs_run', 0)} epochs "
                f"(best {t.get('best_epoch', 0)}), {t.get('examples_per_second', 0):,} examples/s; "
                f"total {metrics.get('total_seconds', 0):.1f} s."),
            ]
        version = getattr(run, "model_version", None)
        outcome = {
            # A run on unchanged data trains nothing (training/services/fingerprint.py): run.error says which serves.
            "succeeded": run.error if "unchanged" in metrics else
                         f"Promoted: model version {version.pk if version else '?'} now serves.",
            "rejected": f"Not promoted: {run.error}",
        }.get(run.status, f"Run {run.status}: {run.error}")
        lines += [outcome, ""]
        self.stdout.write("\n".join(lines))
