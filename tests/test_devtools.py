"""The development tools `make run` relies on, as plain functions."""

import stat

import pytest

from devtools import flower_login


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(flower_login, "ROOT", tmp_path)
    monkeypatch.setattr(flower_login, "KEPT", tmp_path / "var" / "flower-login")
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    return tmp_path


def test_flower_login_is_made_once_kept_private_and_reused(project):
    made = flower_login.login()
    user, _, password = made.partition(":")
    assert user == "admin" and len(password) >= 16
    assert flower_login.login() == made, "the same login at the next make run"
    assert stat.S_IMODE((project / "var" / "flower-login").stat().st_mode) == 0o600


def test_flower_login_from_dotenv_wins_as_honcho_hands_it_to_flower(project, monkeypatch):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "from:environment")
    assert flower_login.login() == "from:environment"
    (project / ".env").write_text("SECRET_KEY=x\nFLOWER_BASIC_AUTH=from:dotenv\n")
    assert flower_login.login() == "from:dotenv"
    assert not (project / "var" / "flower-login").exists(), "nothing made up when one is given"
