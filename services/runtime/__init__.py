"""The one shared runtime of every svpl service.

config (pydantic-settings), JSON logging with personnummer masking, the grpc.aio
server bootstrap (health, reflection, the error/metrics interceptor, SIGTERM, and
`Resources`: what a service opens, closed in reverse), caller authentication, service
clients, MongoDB, the versioned store (store.py), the one paging scheme (paging.py),
the transactional outbox, and the access log.
No service copies any of this; each imports it from here.
"""
