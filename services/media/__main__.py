from services.media.config import MediaSettings
from services.media.server import build
from services.runtime.server import main

main(MediaSettings, build)
