"""python manage.py effects [status|relay|replay|prune]: look after the effect ledger."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from offload import ledger, outbox, relay
from offload.conf import conf
from offload.models import Effect


class Command(BaseCommand):
    help = (
        "Show the effect ledger (default), relay unpublished effects, replay dead letters, prune."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", title="actions")
        actions.add_parser("status", help="counts by status and the age of the oldest pending")
        actions.add_parser("relay", help="publish effects the broker never had or lost")
        replay = actions.add_parser("replay", help="run dead letters again with fresh attempts")
        replay.add_argument("ids", nargs="*", type=int, help="effect ids (default: none)")
        replay.add_argument("--all", dest="every", action="store_true", help="every dead letter")
        replay.add_argument("--task", help="only dead letters of this task")
        prune = actions.add_parser(
            "prune", help="delete done and skipped effects older than --days"
        )
        prune.add_argument("--days", type=int, default=conf.EFFECT_RETENTION_DAYS)

    def handle(self, *args: Any, action: str | None = None, **options: Any) -> None:
        getattr(self, action or "status")(**options)

    def status(self, **options: Any) -> None:
        summary = ledger.summary()
        for status, count in summary["counts"].items():
            self.stdout.write(f"{status:<8} {count}")
        self.stdout.write(f"oldest pending: {summary['oldest_pending_seconds']:.1f}s")

    def relay(self, **options: Any) -> None:
        self.stdout.write(f"published {relay.relay()} effect(s) again")

    def replay(self, ids: list[int], every: bool, task: str | None, **options: Any) -> None:
        if not ids and not every and not task:
            raise CommandError("name effect ids, or --all, or --task NAME")
        effects = Effect.objects.filter(status=Effect.Status.DEAD)
        if ids:
            effects = effects.filter(pk__in=ids)
        if task:
            effects = effects.filter(task=task)
        self.stdout.write(f"replayed {outbox.replay(effects)} dead letter(s)")

    def prune(self, days: int, **options: Any) -> None:
        if days < 0:
            raise CommandError("--days must be 0 or more")
        self.stdout.write(f"pruned {ledger.prune(days)} ended effect(s) older than {days} day(s)")
