import logging

import uvicorn

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.serving import server_config
from services.runtime import tracing
from services.runtime.config import SettingsError, load_settings
from services.runtime.logs import setup_logging
from services.runtime.metrics import start_metrics_server
from services.runtime.tls import TlsConfigError

settings = load_settings(GatewaySettings)
if settings.tls_files is not None:
    try:  # the channels open on first use: unusable certificate files stop the start instead
        settings.tls_files.read()
    except TlsConfigError as exc:
        raise SettingsError(f"svpl: {exc}") from None
setup_logging(settings.service_name, settings.log_level)
metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
logging.getLogger("svpl.gateway").info("gateway metrics", extra={"svpl_metrics_port": metrics_port})
tracer = tracing.setup(settings.service_name, settings)
uvicorn.Server(server_config(create_app(settings), settings)).run()
if tracer is not None:
    tracer.shutdown()  # the last spans exported
