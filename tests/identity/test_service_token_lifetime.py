"""Service tokens live 30 days (rotation needs no longer, see KeyRing.issue_service_token), and the
CLI refuses to mint a year-long one."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from services.identity.__main__ import cli
from services.identity.tokens import KeyRing


@pytest.fixture
def keys_dir(tmp_path, monkeypatch):
    KeyRing.generate().save_current(tmp_path)
    monkeypatch.setenv("SVPL_SIGNING_KEYS_DIR", str(tmp_path))
    return tmp_path


def lifetime(token: str) -> dt.timedelta:
    claims = jwt.decode(token, options={"verify_signature": False})
    return dt.timedelta(seconds=claims["exp"] - claims["iat"])


def test_a_minted_service_token_lives_30_days_unless_asked_for_fewer(keys_dir, capsys):
    cli(["mint-service-token", "booking"])
    assert lifetime(capsys.readouterr().out.strip()) == dt.timedelta(days=30)
    cli(["mint-service-token", "booking", "--days", "7"])
    assert lifetime(capsys.readouterr().out.strip()) == dt.timedelta(days=7)


def test_a_year_long_service_token_is_refused(keys_dir, capsys):
    with pytest.raises(SystemExit):
        cli(["mint-service-token", "booking", "--days", "365"])
    assert "--days: between 1 and 90" in capsys.readouterr().err
