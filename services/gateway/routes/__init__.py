"""REST under /api/v1, one router per API tag: decode and validate (pydantic), relay the person's
own token to the service that owns the rule, shape the contract's answer as JSON. No business
rules here. What the routers share is in `common`."""

from services.gateway.routes import agenda, bookings, desk, directory, joining, meetings, support

ROUTERS = (bookings.router, meetings.router, agenda.router, joining.router, directory.router, support.router,
           desk.router)
