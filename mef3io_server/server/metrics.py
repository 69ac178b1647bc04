"""Prometheus metrics at ``http://<host>:METRICS_PORT/metrics``.

Two sources, one private registry (nothing global, so several servers can
live in one process, as in tests):

* :class:`CallMetrics` listens to :class:`~.calls.CallObserver`: requests by
  RPC and outcome, a latency histogram per RPC, sample bytes streamed.
* :class:`EngineCollector` reads the engine's own counters at scrape time
  (no bookkeeping on the data path): tile cache hits, misses, evictions,
  bytes held; decodes, decode time and worker restarts; prefetch hits; open
  files; sessions; data calls in flight.

Every name starts with ``mef3io_server_``. Labels never hold a file path,
a client id or anything else from a request, so the metrics carry no
patient information and their cardinality stays fixed.
"""
from __future__ import annotations

import logging
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .calls import CallObserver, CallRecord

log = logging.getLogger("mef3io_server.metrics")

PREFIX = "mef3io_server_"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0, 300.0)


class CallMetrics:
    """Per-RPC counters and latency, fed one :class:`CallRecord` per finished call."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(PREFIX + "requests", "gRPC calls finished, by RPC and outcome "
                                "(ok, error, cancelled, unauthenticated, internal, ...)",
                                ["rpc", "outcome"], registry=registry)
        self.latency = Histogram(PREFIX + "request_duration_seconds",
                                 "Time from a call's start to its last message, in seconds",
                                 ["rpc"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.bytes = Counter(PREFIX + "streamed_bytes", "Sample bytes streamed to clients",
                             ["rpc"], registry=registry)

    def __call__(self, rec: CallRecord) -> None:
        self.requests.labels(rec.rpc, rec.outcome).inc()
        self.latency.labels(rec.rpc).observe(rec.duration_s)
        if rec.bytes:
            self.bytes.labels(rec.rpc).inc(rec.bytes)


class EngineCollector(Collector):
    """The engine's counters, read when Prometheus scrapes."""

    def __init__(self, engine, observer: Optional[CallObserver] = None):
        self.engine = engine
        self.observer = observer

    def collect(self):
        e = self.engine
        cs = e.cache.stats()
        ds = e.decoder.stats() or {}
        ss = e.store.stats

        def counter(name, doc, value):
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def gauge(name, doc, value):
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield counter("cache_hits", "Tile cache lookups that found the tile", cs.hits)
        yield counter("cache_misses", "Tile cache lookups that did not", cs.misses)
        yield counter("cache_evictions", "Tiles evicted to stay within TILE_CACHE_MB",
                      cs.evictions)
        yield counter("cache_expirations", "Tiles dropped after CACHE_TTL_S idle",
                      cs.expirations)
        yield gauge("cache_bytes", "Bytes of tiles held in the cache", cs.bytes)
        yield gauge("cache_max_bytes", "The cache's budget in bytes (TILE_CACHE_MB)",
                    cs.max_bytes)
        yield gauge("cache_tiles", "Tiles held in the cache", cs.items)
        yield counter("decodes", "Decode jobs completed (mef3io reads)", ds.get("decodes", 0))
        yield counter("decode_seconds", "Time spent in decode jobs, in seconds",
                      ds.get("decode_seconds", 0.0))
        yield counter("decode_worker_restarts", "Decode worker pools rebuilt after a worker "
                      "died", ds.get("worker_restarts", 0))
        yield counter("tiles_decoded", "Tiles decoded for reads", ss.tiles_decoded)
        yield counter("prefetch_tiles_decoded", "Tiles decoded by prefetch",
                      ss.prefetch_tiles_decoded)
        yield counter("prefetch_hits", "Prefetched tiles later read by a client",
                      ss.prefetch_hits)
        yield counter("reads_cancelled", "Reads whose client went away (cancelled, deadline) "
                      "before the end", e.counters.reads_cancelled)
        yield counter("tiles_cancelled", "Tiles not decoded because their read was cancelled",
                      ss.tiles_cancelled)
        yield gauge("open_files", "Recordings open", len(e.sessions.open_paths()))
        yield gauge("sessions", "Client sessions (client id x file)", e.sessions.session_count())
        if self.observer is not None:
            yield gauge("calls_in_flight", "Data calls being served", self.observer.in_flight)


class MetricsServer:
    """The ``/metrics`` HTTP endpoint (plain HTTP; keep the port inside the cluster)."""

    def __init__(self, engine, observer: CallObserver, port: int, addr: str = "0.0.0.0"):
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = CallMetrics(self.registry)
        self.registry.register(EngineCollector(engine, observer))
        observer.listeners.append(self.calls)
        self._httpd, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
