"""manage.py import_users: accounts from a CSV file, with the welcome receiver disconnected for
the import and connected again afterwards (also when it fails)."""

import io
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models.signals import post_save

from notifications.apps import WELCOME_UID
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_user

pytestmark = pytest.mark.django_db
User = get_user_model()


def run(path, *args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_users", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def welcome_connected() -> bool:
    return any(key[0] == WELCOME_UID for key, *_ in post_save.receivers)


def test_it_imports_accounts_without_welcome_emails(tmp_path):
    csv = tmp_path / "users.csv"
    csv.write_text("username,email\nann,ann@example.com\nben, ben@example.com\n")
    out, err = run(csv)
    assert "imported 2 account(s)" in out and err == ""
    ann = User.objects.get(username="ann")
    assert ann.email == "ann@example.com" and not ann.has_usable_password()
    assert User.objects.get(username="ben").email == "ben@example.com"
    assert not Effect.objects.filter(task=WELCOME_TASK).exists()
    assert welcome_connected(), "the receiver is back once the import is over"
    make_user("after")
    assert Effect.objects.filter(task=WELCOME_TASK).count() == 1


def test_with_welcome_each_new_account_is_greeted(tmp_path):
    csv = tmp_path / "users.csv"
    csv.write_text("email,username,team\nann@example.com,ann,red\n")  # any order, extras ignored
    run(csv, "--welcome")
    [welcome] = Effect.objects.filter(task=WELCOME_TASK)
    assert welcome.user.username == "ann"


def test_bad_rows_are_reported_by_line_and_the_rest_imported(tmp_path):
    make_user("taken")
    csv = tmp_path / "users.csv"
    csv.write_text(
        "username,email\n"
        "good1,g1@example.com\n"
        "bad name,x@example.com\n"  # line 3
        "taken,t@example.com\n"  # line 4
        "noemail,\n"  # line 5
        "good2,g2@example.com\n"
        "good2,again@example.com\n"  # line 7: imported a line earlier
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="skipped 4 row"):
        call_command("import_users", str(csv), stdout=io.StringIO(), stderr=err)
    assert [line.split(":")[:2] for line in err.getvalue().splitlines()] == [
        ["line 3", " username"],
        ["line 4", " username"],
        ["line 5", " email"],
        ["line 7", " username"],
    ]
    assert set(User.objects.values_list("username", flat=True)) == {"taken", "good1", "good2"}
    assert welcome_connected()


def test_an_error_mid_import_restores_the_receiver(tmp_path):
    csv = tmp_path / "users.csv"
    csv.write_bytes(b"username,email\nann,ann@example.com\n" + b"x" * 9000 + b"\xff,z\n")
    with pytest.raises(CommandError, match="not UTF-8 text; stopped after importing 1 account"):
        run(csv)
    assert welcome_connected()
    assert User.objects.get(username="ann"), "the rows before it are committed"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"name,mail\na,b@example.com\n", "header must name username,email"), (b"", "header")],
)
def test_a_file_without_the_header_imports_nothing(tmp_path, content, message):
    csv = tmp_path / "users.csv"
    csv.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        run(csv)
    assert not User.objects.exists()


def test_a_missing_file_is_a_clear_cli_error(tmp_path):
    """As a user runs it: one line on stderr, no traceback, exit status 1."""
    result = subprocess.run(
        [sys.executable, "manage.py", "import_users", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "No such file" in result.stderr
    assert "Traceback" not in result.stderr
