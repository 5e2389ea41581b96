from services.booking.config import BookingSettings
from services.booking.server import build
from services.runtime.server import main

main(BookingSettings, build)
