"""Server configuration: read and validated in one place, from environment variables.

Every setting the server honours is a field of :class:`Settings`, filled by
:func:`load_settings` from the environment. The names and defaults of the
published mef3io-server 3.1.0 are kept (``PORT``, ``TILE_DURATION_S``, ...);
where this server's default differs, the field's comment says why and
``docs/configuration.md`` has the measurement. A bad value raises
:class:`ConfigError` naming the variable, and start-up stops with that message.
"""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, fields
from typing import Callable, Mapping, Optional

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration variable has a value the server cannot use."""

    def __init__(self, variable: str, value: str, problem: str):
        self.variable = variable
        super().__init__(f"{variable}={value!r}: {problem}")


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with (units in the names)."""

    # --- gRPC ---
    port: int = 50051                      # PORT
    bind_address: str = "::"               # BIND_ADDRESS: the address PORT listens on (3.1.0:
                                           # every interface; `serve --demo` uses localhost)
    max_workers: int = 16                  # MAX_WORKERS: gRPC handler threads (3.1.0: 4; one
                                           # streaming call holds one, so 4 made a 5th viewer wait)
    # --- tiles and cache ---
    tile_duration_s: float = 10.0          # TILE_DURATION_S (3.1.0: 60; 10 s = one default MEF
                                           # block at < 5 kHz, so a cold 10 s read decodes 20 s, not 120 s)
    tile_cache_bytes: int = 512 * MIB      # TILE_CACHE_MB
    index_cache_bytes: int = 64 * MIB      # INDEX_CACHE_MB: pages of block indexes (0: none kept)
    cache_ttl_s: Optional[float] = 1800.0  # CACHE_TTL_S (0 or empty: no idle expiry)
    respect_mef_blocks: bool = False       # RESPECT_MEF_BLOCKS
    preload_filters: bool = True           # PRELOAD_FILTERS: import SciPy's filters at
                                           # start (else on the first filter)
    # --- sessions ---
    session_ttl_s: Optional[float] = 1800.0  # SESSION_TTL_S (0 or empty: sessions never expire)
    max_sessions: int = 1000               # MAX_SESSIONS
    # --- decode ---
    use_process_pool: bool = False         # USE_PROCESS_POOL (3.1.0: true; threads measured faster)
    reader_processes: Optional[int] = None  # READER_PROCESSES (None: one per core)
    prefetch_processes: Optional[int] = None  # PREFETCH_PROCESSES (None: one per core; 3.1.0:
                                           # 1. Prefetch tiles are split by channel over them)
    min_parallel_tiles: int = 2            # MIN_PARALLEL_TILES
    decode_threads: int = 0                # DECODE_THREADS: mef3io threads per reader (0: automatic)
    # --- prefetch ---
    prefetch_ahead_windows: int = 1        # PREFETCH_AHEAD_WINDOWS
    prefetch_behind_windows: int = 1       # PREFETCH_BEHIND_WINDOWS
    # --- limits ---
    max_read_bytes: int = 16384 * MIB      # MAX_READ_MB: largest float32 answer of one read
    chunk_bytes: int = 1 << 20             # CHUNK_BYTES: largest SignalChunk payload (see docs)
    max_channels_per_read: int = 4096      # MAX_CHANNELS_PER_READ
    shutdown_grace_s: float = 10.0         # SHUTDOWN_GRACE_S
    refresh_interval_s: float = 2.0        # REFRESH_INTERVAL_S: how often an open recording
                                           # is checked for appended or changed files
    change_notifications: str = "auto"     # CHANGE_NOTIFICATIONS: auto (the OS's file
                                           # notifications where trusted, polling elsewhere)
                                           # or off (poll every open recording)
    # --- paths and security ---
    host_root: str = ""                    # HOST_ROOT: prefix joined to every client path
    data_roots: tuple[str, ...] = ()       # DATA_ROOTS: ':'-separated; empty = any readable path
    tls_cert_file: Optional[str] = None    # TLS_CERT_FILE
    tls_key_file: Optional[str] = None     # TLS_KEY_FILE
    tls_client_ca_file: Optional[str] = None  # TLS_CLIENT_CA_FILE
    auth_tokens_file: Optional[str] = None  # AUTH_TOKENS_FILE
    grpc_reflection: bool = True           # GRPC_REFLECTION
    metrics_port: Optional[int] = None     # METRICS_PORT
    metrics_bind_address: Optional[str] = None  # METRICS_BIND_ADDRESS (None: BIND_ADDRESS)
    http_port: Optional[int] = None        # HTTP_PORT: the web viewer and its API (None: off)
    http_bind_address: Optional[str] = None  # HTTP_BIND_ADDRESS (None: BIND_ADDRESS)
    log_level: str = "INFO"                # LOG_LEVEL
    log_format: str = "text"               # LOG_FORMAT: text or json
    demo_dir: str = ""                     # DEMO_DIR: where the demo recording is written
    envelope_rows_per_message: int = 50_000  # ENVELOPE_ROWS_PER_MESSAGE: block rows in one
                                           # ChannelEnvelope (32 B each; 50 000 = 1.6 MB)
    points_source_bytes: int = 32 * MIB    # POINTS_SOURCE_MB: source samples held at once
                                           # while an n_points read streams through MinMax
    # --- hardening (issue 19) ---
    stream_stall_timeout_s: Optional[float] = 30.0  # STREAM_STALL_TIMEOUT_S: a streaming call
                                           # whose client takes no message this long is
                                           # cancelled (0 or empty: never)
    points_memory_bytes: int = 128 * MIB   # POINTS_MEMORY_MB: memory all n_points
                                           # reductions hold at once (outside the cache)

    @property
    def tile_cache_mb(self) -> float:
        return self.tile_cache_bytes / MIB

    @property
    def effective_reader_processes(self) -> int:
        return self.reader_processes or max(1, os.cpu_count() or 1)

    @property
    def effective_prefetch_processes(self) -> int:
        return self.prefetch_processes or max(1, os.cpu_count() or 1)

    def listen_address(self, port: Optional[int] = None) -> str:
        """``host:port`` the gRPC server binds (IPv6 literals in brackets)."""
        return host_port(self.bind_address, self.port if port is None else port)

    @property
    def effective_metrics_bind_address(self) -> str:
        return self.metrics_bind_address or self.bind_address

    @property
    def effective_http_bind_address(self) -> str:
        return self.http_bind_address or self.bind_address

    def replace(self, **changes) -> "Settings":
        """A copy with some fields changed (the dataclass is frozen)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


# ---- parsers: each takes the raw string and returns the value or raises ValueError ----

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _int(lo: int, hi: int = 2**62) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            v = int(raw.strip())
        except ValueError:
            raise ValueError("not a whole number") from None
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return v
    return parse


def _float(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            v = float(raw.strip())
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(v):
            raise ValueError("must be finite")
        if v < lo or (lo_open and v == lo) or v > hi:
            raise ValueError(f"must be {'>' if lo_open else '>='} {lo}"
                             + ("" if hi == math.inf else f" and <= {hi}"))
        return v
    return parse


def _optional_ttl(raw: str) -> Optional[float]:
    if raw.strip() == "":
        return None
    v = _float(0.0)(raw)
    return None if v == 0 else v


def _optional_int(lo: int, hi: int = 2**31) -> Callable[[str], Optional[int]]:
    base = _int(lo, hi)

    def parse(raw: str) -> Optional[int]:
        return None if raw.strip() == "" else base(raw)
    return parse


def _mb(lo_open_zero: bool = True) -> Callable[[str], int]:
    base = _float(0.0, 1 << 40, lo_open=lo_open_zero)

    def parse(raw: str) -> int:
        return int(base(raw) * MIB)
    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return v
    return parse


def _log_level(raw: str) -> str:
    v = raw.strip().upper()
    if v not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return v


def _existing_file(raw: str) -> Optional[str]:
    v = raw.strip()
    if not v:
        return None
    if not os.path.isfile(v):
        raise ValueError("no such file")
    return v


def _roots(raw: str) -> tuple[str, ...]:
    roots = []
    for part in raw.split(":"):
        part = part.strip()
        if not part:
            continue
        if not os.path.isabs(part):
            raise ValueError(f"{part!r} is not an absolute path")
        if not os.path.isdir(part):
            raise ValueError(f"{part!r} is not a directory")
        roots.append(os.path.realpath(part))
    return tuple(roots)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:50051``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_address(raw: str) -> str:
    v = raw.strip()
    if not v:
        return Settings.bind_address        # empty: as if unset
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if v.lower() == "localhost":
        return "localhost"
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError("expected an IP address (:: or 0.0.0.0 for every interface, "
                         "127.0.0.1 or ::1 for this machine only) or localhost") from None


def _optional_bind_address(raw: str) -> Optional[str]:
    return None if raw.strip() == "" else _bind_address(raw)


def _text(raw: str) -> str:
    return raw.strip()


#: variable name -> (field name, parser)
VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "PORT": ("port", _int(0, 65535)),
    "BIND_ADDRESS": ("bind_address", _bind_address),
    "MAX_WORKERS": ("max_workers", _int(1, 1024)),
    "TILE_DURATION_S": ("tile_duration_s", _float(0.0, 86400.0, lo_open=True)),
    "TILE_CACHE_MB": ("tile_cache_bytes", _mb()),
    "INDEX_CACHE_MB": ("index_cache_bytes", _mb(lo_open_zero=False)),
    "CACHE_TTL_S": ("cache_ttl_s", _optional_ttl),
    "SESSION_TTL_S": ("session_ttl_s", _optional_ttl),
    "MAX_SESSIONS": ("max_sessions", _int(1, 10_000_000)),
    "RESPECT_MEF_BLOCKS": ("respect_mef_blocks", _bool),
    "PRELOAD_FILTERS": ("preload_filters", _bool),
    "USE_PROCESS_POOL": ("use_process_pool", _bool),
    "READER_PROCESSES": ("reader_processes", _optional_int(1, 256)),
    "PREFETCH_PROCESSES": ("prefetch_processes", _optional_int(1, 256)),
    "MIN_PARALLEL_TILES": ("min_parallel_tiles", _int(1, 1_000_000)),
    "DECODE_THREADS": ("decode_threads", _int(0, 256)),
    "PREFETCH_AHEAD_WINDOWS": ("prefetch_ahead_windows", _int(0, 1000)),
    "PREFETCH_BEHIND_WINDOWS": ("prefetch_behind_windows", _int(0, 1000)),
    "MAX_READ_MB": ("max_read_bytes", _mb()),
    "CHUNK_BYTES": ("chunk_bytes", _int(4096, 64 * MIB)),
    "MAX_CHANNELS_PER_READ": ("max_channels_per_read", _int(1, 1_000_000)),
    "SHUTDOWN_GRACE_S": ("shutdown_grace_s", _float(0.0, 3600.0)),
    "REFRESH_INTERVAL_S": ("refresh_interval_s", _float(0.0, 86400.0)),
    "CHANGE_NOTIFICATIONS": ("change_notifications", _choice("auto", "off")),
    "HOST_ROOT": ("host_root", _text),
    "DATA_ROOTS": ("data_roots", _roots),
    "TLS_CERT_FILE": ("tls_cert_file", _existing_file),
    "TLS_KEY_FILE": ("tls_key_file", _existing_file),
    "TLS_CLIENT_CA_FILE": ("tls_client_ca_file", _existing_file),
    "AUTH_TOKENS_FILE": ("auth_tokens_file", _existing_file),
    "GRPC_REFLECTION": ("grpc_reflection", _bool),
    "METRICS_PORT": ("metrics_port", _optional_int(0, 65535)),
    "METRICS_BIND_ADDRESS": ("metrics_bind_address", _optional_bind_address),
    "HTTP_PORT": ("http_port", _optional_int(0, 65535)),
    "HTTP_BIND_ADDRESS": ("http_bind_address", _optional_bind_address),
    "LOG_LEVEL": ("log_level", _log_level),
    "LOG_FORMAT": ("log_format", _choice("text", "json")),
    "DEMO_DIR": ("demo_dir", _text),
    "ENVELOPE_ROWS_PER_MESSAGE": ("envelope_rows_per_message", _int(1, 1_000_000)),
    "POINTS_SOURCE_MB": ("points_source_bytes", _mb()),
    "STREAM_STALL_TIMEOUT_S": ("stream_stall_timeout_s", _optional_ttl),
    "POINTS_MEMORY_MB": ("points_memory_bytes", _mb()),
}


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``).

    Unset variables keep their defaults. Raises :class:`ConfigError` naming the
    first variable whose value is invalid, or a pair that contradicts itself.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (attr, parse) in VARIABLES.items():
        raw = env.get(name)
        if raw is None:
            continue
        try:
            values[attr] = parse(raw)
        except ValueError as e:
            raise ConfigError(name, raw, str(e)) from None
    settings = Settings(**values)
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        missing = "TLS_KEY_FILE" if settings.tls_key_file is None else "TLS_CERT_FILE"
        raise ConfigError(missing, "", "TLS needs both TLS_CERT_FILE and TLS_KEY_FILE")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise ConfigError("TLS_CLIENT_CA_FILE", settings.tls_client_ca_file,
                          "client certificates need TLS_CERT_FILE and TLS_KEY_FILE")
    if settings.metrics_port is not None and settings.metrics_port == settings.port \
            and settings.port != 0:
        raise ConfigError("METRICS_PORT", str(settings.metrics_port), "must differ from PORT")
    if settings.http_port:
        for other, value in (("PORT", settings.port), ("METRICS_PORT", settings.metrics_port)):
            if value == settings.http_port:
                raise ConfigError("HTTP_PORT", str(settings.http_port), f"must differ from {other}")
    return settings
