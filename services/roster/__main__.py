from services.roster.config import RosterSettings
from services.roster.server import build
from services.runtime.server import main

main(RosterSettings, build)
