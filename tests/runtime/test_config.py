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


# Each outside system: the service refuses to start until it is configured or switched off, naming both.
UNSET_INTEGRATIONS = [
    ("booking", {}, "SVPL_COSMIC_LINK_URL is required; or set SVPL_COSMIC_LINK_ENABLED=false"),
    ("roster", {"SVPL_PORTAL_BASE_URL": "https://vardmote.example.se"},
     "SVPL_INBOX_1177_URL and SVPL_INBOX_1177_CLIENT_CERT_FILE and SVPL_INBOX_1177_CLIENT_KEY_FILE are required; "
     "or set SVPL_INBOX_1177_ENABLED=false"),
    ("roster", {"SVPL_INBOX_1177_ENABLED": "false"}, "SVPL_PORTAL_BASE_URL is required"),
    ("identity", {"SVPL_DIRECTORY_BACKEND": "ldap", "SVPL_LDAP_URL": "ldaps://hsa.example.se:636",
                  "SVPL_LDAP_BASE_DN": "c=SE"}, "SVPL_SITHS_CA_FILES is required; or set SVPL_SITHS_ENABLED=false"),
    ("identity", {"SVPL_SITHS_ENABLED": "false"}, "the HSA directory is required"),
    ("identity", {"SVPL_SITHS_ENABLED": "false", "SVPL_DIRECTORY_BACKEND": "ldap"},
     "SVPL_LDAP_URL and SVPL_LDAP_BASE_DN required"),
]


@pytest.mark.parametrize(("service", "env", "message"), UNSET_INTEGRATIONS)
def test_a_service_with_an_integration_neither_set_nor_switched_off_refuses_to_start(service, env, message):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SVPL_")}
    base.update({"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}", "SVPL_MONGODB_URI": "mongodb://127.0.0.1:1",
                 "SVPL_SIGNING_KEYS_DIR": "/nonexistent", **env})
    result = subprocess.run([sys.executable, "-m", f"services.{service}"], env=base, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_integrations_switched_off_explicitly_are_accepted(monkeypatch):
    from services.identity.config import IdentitySettings
    from services.roster.config import RosterSettings

    for name, value in {"SVPL_MONGODB_URI": "mongodb://x", "SVPL_SIGNING_KEYS_DIR": "/k",
                        "SVPL_COSMIC_LINK_ENABLED": "false", "SVPL_INBOX_1177_ENABLED": "false",
                        "SVPL_SITHS_ENABLED": "false", "SVPL_DIRECTORY_EXPORT_FILE": "/hsa.jsonl",
                        "SVPL_PORTAL_BASE_URL": "https://vardmote.example.se"}.items():
        monkeypatch.setenv(name, value)
    assert not load_settings(BookingSettings).cosmic_link_enabled
    assert not load_settings(RosterSettings).inbox_1177_enabled
    assert not load_settings(IdentitySettings).siths_enabled
