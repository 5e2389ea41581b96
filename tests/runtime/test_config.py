import os
import subprocess
import sys

import pytest

from devstack.stack import ROOT
from services.booking.config import BookingSettings
from services.runtime.config import SettingsError, load_settings


def test_missing_required_setting_names_the_variable(monkeypatch):
    monkeypatch.delenv("SVPL_MONGODB_URI", raising=False)
    with pytest.raises(SettingsError) as err:
        load_settings(BookingSettings)
    assert "SVPL_MONGODB_URI is required" in str(err.value)


def test_invalid_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("SVPL_MONGODB_URI", "mongodb://x")
    monkeypatch.setenv("SVPL_GRPC_PORT", "seventy")
    with pytest.raises(SettingsError) as err:
        load_settings(BookingSettings)
    assert "SVPL_GRPC_PORT" in str(err.value)


@pytest.mark.parametrize("service", ["identity", "booking", "roster", "media", "support", "gateway"])
def test_service_without_required_settings_fails_fast_naming_them(service):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVPL_")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
    result = subprocess.run([sys.executable, "-m", f"services.{service}"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is required but not set" in result.stderr
    assert "SVPL_" in result.stderr
    assert "Traceback" not in result.stderr
