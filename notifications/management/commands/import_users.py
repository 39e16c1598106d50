"""python manage.py import_users FILE.csv [--welcome]: create accounts from a CSV file.

The header names the columns ``username,email`` (others are ignored). Imported accounts get an
unusable password: their owners set one with "Forgot your password?" on the login page (or an
admin with ``manage.py changepassword``).

A bulk import should not greet hundreds of people who never signed up here, so the welcome
receiver is disconnected for the import (``--welcome`` keeps it) and connected again afterwards,
also when the import fails. Disconnecting changes this process's receivers only: the web and
worker processes keep theirs, which is why only a command, never a web request, may do it.

Each row is its own transaction: a bad row is reported with its line number and skipped, and
every good row is imported. The command exits with status 1 when it skipped any row.
"""

import csv
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save

from notifications import receivers
from notifications.apps import WELCOME_UID

User = get_user_model()
COLUMNS = ("username", "email")


class Row(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(max_length=254)


@contextmanager
def welcome_emails_off() -> Iterator[None]:
    """No welcome email for the users this process creates meanwhile."""
    was_connected = post_save.disconnect(sender=User, dispatch_uid=WELCOME_UID)
    try:
        yield
    finally:
        if was_connected:
            post_save.connect(receivers.welcome_new_user, sender=User, dispatch_uid=WELCOME_UID)


class Command(BaseCommand):
    help = "Create accounts from a CSV file with the header username,email."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="a UTF-8 CSV file: username,email")
        parser.add_argument(
            "--welcome", action="store_true", help="send each new account the welcome email"
        )

    def handle(self, *args: Any, file: Path, welcome: bool, **options: Any) -> None:
        self.imported = self.skipped = 0
        try:
            with file.open(newline="", encoding="utf-8-sig") as stream:
                reader = csv.DictReader(stream, skipinitialspace=True)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
                if missing:
                    raise CommandError(f"{file}: the header must name {','.join(COLUMNS)}")
                with nullcontext() if welcome else welcome_emails_off():
                    self.import_rows(reader)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            problem = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise CommandError(
                f"{file}: {problem}; stopped after importing {self.imported} account(s)"
            ) from exc
        emails = "sent" if welcome else "not sent (receiver disconnected)"
        self.stdout.write(f"imported {self.imported} account(s); welcome emails {emails}")
        if self.skipped:
            raise CommandError(f"skipped {self.skipped} row(s), reported above")

    def import_rows(self, reader: csv.DictReader) -> None:
        for values in reader:
            row = Row({name: values.get(name) or "" for name in COLUMNS})
            problem = self.import_row(row)
            if problem:
                self.skipped += 1
                self.stderr.write(f"line {reader.line_num}: {problem}")
            else:
                self.imported += 1

    def import_row(self, row: Row) -> str | None:
        """None once the account exists, else what is wrong with the row."""
        if not row.is_valid():
            return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in row.errors.items())
        username, email = row.cleaned_data["username"], row.cleaned_data["email"]
        if User.objects.filter(username=username).exists():
            return f"username: {username!r} is taken"
        try:
            with transaction.atomic():
                User.objects.create_user(username=username, email=email, password=None)
        except IntegrityError:  # taken meanwhile
            return f"username: {username!r} is taken"
        return None
