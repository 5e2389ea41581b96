from grpc_health.v1 import health_pb2, health_pb2_grpc


async def test_whole_system_starts_in_process_and_serves_health(system_factory):
    system = await system_factory()
    for name in system.running:
        stub = health_pb2_grpc.HealthStub(system.channel(name))
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
