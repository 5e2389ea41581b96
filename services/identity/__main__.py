"""python -m services.identity [mint-service-token NAME | new-signing-key]"""

import argparse
import sys

from services.identity.config import IdentitySettings
from services.identity.server import build
from services.identity.tokens import KeyRing
from services.runtime.config import load_settings
from services.runtime.server import main


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    sub = parser.add_subparsers(dest="command")
    mint = sub.add_parser("mint-service-token", help="print a service token signed with the current key")
    mint.add_argument("service")
    sub.add_parser("new-signing-key", help="generate a new Ed25519 key in SVPL_SIGNING_KEYS_DIR (rotation)")
    args = parser.parse_args(argv)
    settings = load_settings(IdentitySettings, mongodb_uri="unused")
    if args.command == "mint-service-token":
        print(KeyRing.load(settings.signing_keys_dir).issue_service_token(args.service))
    elif args.command == "new-signing-key":
        print(KeyRing.generate().save_current(settings.signing_keys_dir))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        cli(sys.argv[1:])
    else:
        main(IdentitySettings, build)
