from services.media.config import MediaSettings
from services.media.server import build, event_loop
from services.runtime.server import main

main(MediaSettings, build, event_loop)
