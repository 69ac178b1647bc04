"""Health (grpc.health.v1) through start-up and drain, reflection on and off, the probe CLI."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from mef3io_server.client import Mef3Client
from mef3io_server.healthcheck import check
from mef3io_server.server.app import SERVICE_NAME, build_server
from mef3io_server.server.config import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_through_start_up_and_drain():
    running = build_server(Settings(port=0), mark_serving=False)
    address = f"localhost:{running.port}"
    stopped = False
    try:
        # Listening, but start-up (preload) is not finished: NOT_SERVING.
        assert _status(address) == NOT_SERVING
        assert _status(address, SERVICE_NAME) == NOT_SERVING
        assert check(address) == "NOT_SERVING"
        running.set_serving()
        assert _status(address) == SERVING and _status(address, SERVICE_NAME) == SERVING
        # Drain: NOT_SERVING for as long as the server still answers.
        with grpc.insecure_channel(address) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == SERVING
            running.health.enter_graceful_shutdown()
            assert next(watch).status == NOT_SERVING
            assert _status(address) == NOT_SERVING
            watch.cancel()
        running.stop(0)
        stopped = True
        with pytest.raises(grpc.RpcError):
            _status(address)
    finally:
        if not stopped:
            running.stop(0)


def test_reflection_lists_the_service():
    running = build_server(Settings(port=0))
    try:
        with grpc.insecure_channel(f"localhost:{running.port}") as ch:
            db = ProtoReflectionDescriptorDatabase(ch)
            services = set(db.get_services())
            assert SERVICE_NAME in services and "grpc.health.v1.Health" in services
            pool = DescriptorPool(db)
            svc = pool.FindServiceByName(SERVICE_NAME)
            methods = {m.name for m in svc.methods}
            assert {"OpenFile", "GetSignalRange", "FileInfo", "CloseFile"} <= methods
            req = pool.FindMessageTypeByName(svc.methods_by_name["OpenFile"].input_type.full_name)
            assert req.fields_by_name["password"].number == 20
    finally:
        running.stop(0)


def test_reflection_switched_off(start_server):
    h = start_server(GRPC_REFLECTION="false")
    with grpc.insecure_channel(h.address) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            list(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with Mef3Client(h.address) as c:            # the service itself is unaffected
        assert c.list_open_files() == []


def test_probe_cli(start_server):
    h = start_server()
    cmd = [sys.executable, "-m", "mef3io_server.healthcheck"]
    ok = subprocess.run(cmd + ["--address", h.address], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "SERVING" in ok.stderr
    h.stop()
    down = subprocess.run(cmd + ["--address", h.address, "--timeout", "2"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "unhealthy" in down.stderr
