"""The region's booking options: care services, contact types, the combination that
makes a video meeting, and the channels parties may be reached through.

Configuration, not code: a YAML file (services/booking/config/<region>.yaml) chosen by
SVPL_BOOKING_OPTIONS_FILE, validated when the service starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("svpl.booking.options")

SECURE_MESSAGING = "secure_messaging"
PHONE = "phone"
EMAIL = "email"
KNOWN_CHANNELS = (SECURE_MESSAGING, PHONE, EMAIL)


class VideoCombination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    care_service: str = Field(min_length=1)
    contact_type: str = Field(min_length=1)


class BookingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(min_length=1)
    care_services: tuple[str, ...] = Field(min_length=1)
    contact_types: tuple[str, ...] = Field(min_length=1)
    video_meeting: VideoCombination
    party_channels: tuple[str, ...] = (SECURE_MESSAGING, PHONE)

    @model_validator(mode="after")
    def _consistent(self) -> BookingOptions:
        for name, values in (("care_services", self.care_services), ("contact_types", self.contact_types)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
            if any(not v.strip() for v in values):
                raise ValueError(f"{name} has an empty value")
        if self.video_meeting.care_service not in self.care_services:
            raise ValueError("video_meeting.care_service is not one of care_services")
        if self.video_meeting.contact_type not in self.contact_types:
            raise ValueError("video_meeting.contact_type is not one of contact_types")
        unknown = set(self.party_channels) - set(KNOWN_CHANNELS)
        if unknown:
            raise ValueError(f"party_channels: unknown channel(s) {sorted(unknown)}")
        return self

    def makes_video_meeting(self, care_service: str, contact_type: str) -> bool:
        return (care_service, contact_type) == (self.video_meeting.care_service, self.video_meeting.contact_type)

    def channel_allowed(self, channel: str) -> bool:
        """E-mail is never allowed, whatever the file lists."""
        return channel != EMAIL and channel in self.party_channels


class OptionsError(SystemExit):
    """Start-up stops here with a message naming the file and what is wrong."""


def load_options(path: str | Path) -> BookingOptions:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        options = BookingOptions.model_validate(raw)
    except FileNotFoundError:
        raise OptionsError(f"svpl booking: options file {path} does not exist (SVPL_BOOKING_OPTIONS_FILE)") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise OptionsError(f"svpl booking: invalid options file {path}: {exc}") from None
    if EMAIL in options.party_channels:
        log.warning("booking options list e-mail as a party channel; it is refused anyway (not a secure channel)")
    return options
