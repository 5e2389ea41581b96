from services.support.config import SupportSettings
from services.support.server import build
from services.runtime.server import main

main(SupportSettings, build)
