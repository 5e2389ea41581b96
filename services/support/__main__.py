from services.runtime.server import main
from services.support.config import SupportSettings
from services.support.server import build

main(SupportSettings, build)
