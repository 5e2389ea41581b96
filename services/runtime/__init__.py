"""The one shared runtime of every svpl service.

config (pydantic-settings), JSON logging with personnummer masking, the grpc.aio
server bootstrap (health, reflection, the error/metrics interceptor, SIGTERM),
caller authentication, service clients, MongoDB, and the access log.
No service copies any of this; each imports it from here.
"""
