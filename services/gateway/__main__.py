import logging

import uvicorn

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.runtime.config import load_settings
from services.runtime.logs import setup_logging
from services.runtime.metrics import start_metrics_server

settings = load_settings(GatewaySettings)
setup_logging(settings.service_name, settings.log_level)
metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
logging.getLogger("svpl.gateway").info("gateway metrics", extra={"svpl_metrics_port": metrics_port})
# On SIGTERM: no new connections, then up to the grace for open requests and WebSockets to end.
uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None, access_log=False,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds)
