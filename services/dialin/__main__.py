from services.dialin.config import DialinSettings
from services.dialin.server import build
from services.runtime.server import main

main(DialinSettings, build)
