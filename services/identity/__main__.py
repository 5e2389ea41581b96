"""python -m services.identity [mint-service-token NAME | new-signing-key]"""

import argparse
import datetime as dt
import sys

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.identity.config import IdentitySettings
from services.identity.server import build
from services.identity.tokens import MAX_SERVICE_TOKEN_TTL, SERVICE_TOKEN_TTL, KeyRing
from services.runtime.config import ENV_PREFIX, load_settings
from services.runtime.server import main


class KeySettings(BaseSettings):
    """What the key commands need: only the keys' directory (not the running service's settings, which
    require the outside systems: an operator minting tokens has none of them at hand)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    signing_keys_dir: str


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    sub = parser.add_subparsers(dest="command")
    mint = sub.add_parser("mint-service-token", help="print a service token signed with the current key")
    mint.add_argument("service")
    mint.add_argument("--days", type=int, default=SERVICE_TOKEN_TTL.days,
                      help=f"lifetime in days (default {SERVICE_TOKEN_TTL.days}, at most {MAX_SERVICE_TOKEN_TTL.days})")
    sub.add_parser("new-signing-key", help="generate a new Ed25519 key in SVPL_SIGNING_KEYS_DIR (rotation)")
    args = parser.parse_args(argv)
    settings = load_settings(KeySettings)
    if args.command == "mint-service-token":
        ttl = dt.timedelta(days=args.days)
        if not dt.timedelta(days=1) <= ttl <= MAX_SERVICE_TOKEN_TTL:
            parser.error(f"--days: between 1 and {MAX_SERVICE_TOKEN_TTL.days}")
        print(KeyRing.load(settings.signing_keys_dir).issue_service_token(args.service, ttl))
    elif args.command == "new-signing-key":
        print(KeyRing.generate().save_current(settings.signing_keys_dir))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        cli(sys.argv[1:])
    else:
        main(IdentitySettings, build)
