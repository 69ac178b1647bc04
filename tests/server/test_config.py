"""Configuration: defaults, parsing of every variable, errors that name the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mef3io_server.server.config import MIB, VARIABLES, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]

#: The defaults this server documents (published 3.1.0 names; where the value
#: differs from 3.1.0 the Settings field comment says why).
DOCUMENTED_DEFAULTS = {
    "port": 50051,
    "max_workers": 16,                 # 3.1.0: 4
    "tile_duration_s": 10.0,           # 3.1.0: 60
    "tile_cache_bytes": 512 * MIB,
    "cache_ttl_s": 1800.0,
    "respect_mef_blocks": False,
    "session_ttl_s": 1800.0,
    "max_sessions": 1000,
    "use_process_pool": False,         # 3.1.0: true
    "reader_processes": None,
    "prefetch_processes": None,
    "min_parallel_tiles": 2,
    "prefetch_ahead_windows": 1,
    "prefetch_behind_windows": 1,
    "chunk_bytes": 1 << 20,
    "host_root": "",
    "data_roots": (),
    "refresh_interval_s": 2.0,
    "change_notifications": "auto",
}

PUBLISHED_NAMES = ["PORT", "MAX_WORKERS", "TILE_DURATION_S", "TILE_CACHE_MB", "USE_PROCESS_POOL",
                   "READER_PROCESSES", "PREFETCH_PROCESSES", "MIN_PARALLEL_TILES",
                   "PREFETCH_AHEAD_WINDOWS", "PREFETCH_BEHIND_WINDOWS", "CACHE_TTL_S",
                   "SESSION_TTL_S", "MAX_SESSIONS", "RESPECT_MEF_BLOCKS"]


@pytest.fixture
def a_file(tmp_path):
    p = tmp_path / "f.pem"
    p.write_text("x")
    return str(p)


def good_values(tmp_path, a_file) -> dict:
    """Variable -> (raw value, expected parsed field value)."""
    return {
        "PORT": ("6000", 6000),
        "BIND_ADDRESS": ("[::1]", "::1"),
        "MAX_WORKERS": (" 8 ", 8),
        "TILE_DURATION_S": ("2.5", 2.5),
        "TILE_CACHE_MB": ("1.5", int(1.5 * MIB)),
        "INDEX_CACHE_MB": ("0", 0),
        "CACHE_TTL_S": ("60", 60.0),
        "SESSION_TTL_S": ("0", None),
        "MAX_SESSIONS": ("3", 3),
        "RESPECT_MEF_BLOCKS": ("yes", True),
        "PRELOAD_FILTERS": ("off", False),
        "USE_PROCESS_POOL": ("TRUE", True),
        "READER_PROCESSES": ("3", 3),
        "PREFETCH_PROCESSES": ("", None),
        "MIN_PARALLEL_TILES": ("4", 4),
        "DECODE_THREADS": ("2", 2),
        "PREFETCH_AHEAD_WINDOWS": ("0", 0),
        "PREFETCH_BEHIND_WINDOWS": ("2", 2),
        "MAX_READ_MB": ("100", 100 * MIB),
        "CHUNK_BYTES": ("100000", 100000),
        "MAX_CHANNELS_PER_READ": ("10", 10),
        "SHUTDOWN_GRACE_S": ("0", 0.0),
        "REFRESH_INTERVAL_S": ("5", 5.0),
        "CHANGE_NOTIFICATIONS": (" OFF ", "off"),
        "HOST_ROOT": ("/host_root", "/host_root"),
        "DATA_ROOTS": (f"{tmp_path}:/", (os.path.realpath(tmp_path), "/")),
        "TLS_CERT_FILE": (a_file, a_file),
        "TLS_KEY_FILE": (a_file, a_file),
        "TLS_CLIENT_CA_FILE": (a_file, a_file),
        "AUTH_TOKENS_FILE": (a_file, a_file),
        "GRPC_REFLECTION": ("off", False),
        "METRICS_PORT": ("9100", 9100),
        "METRICS_BIND_ADDRESS": (" 127.0.0.1 ", "127.0.0.1"),
        "HTTP_PORT": ("8080", 8080),
        "HTTP_BIND_ADDRESS": ("[::1]", "::1"),
        "LOG_LEVEL": ("debug", "DEBUG"),
        "LOG_FORMAT": ("JSON", "json"),
        "DEMO_DIR": ("/tmp/demo", "/tmp/demo"),
        "ENVELOPE_ROWS_PER_MESSAGE": ("7", 7),
        "POINTS_SOURCE_MB": ("1.5", int(1.5 * 2**20)),
        "STREAM_STALL_TIMEOUT_S": ("12.5", 12.5),
        "POINTS_MEMORY_MB": ("64", 64 * 2**20),
    }


BAD_VALUES = {
    "PORT": ["abc", "-1", "70000"],
    "MAX_WORKERS": ["0", "1.5"],
    "TILE_DURATION_S": ["0", "-3", "nan", "inf", "ten"],
    "TILE_CACHE_MB": ["0", "-1", "lots"],
    "INDEX_CACHE_MB": ["-1", "x", "nan"],
    "CACHE_TTL_S": ["-1", "x"],
    "SESSION_TTL_S": ["-5", "inf"],
    "MAX_SESSIONS": ["0", "many"],
    "RESPECT_MEF_BLOCKS": ["maybe", "2"],
    "PRELOAD_FILTERS": ["sometimes"],
    "USE_PROCESS_POOL": ["ja", ""],
    "READER_PROCESSES": ["0", "x"],
    "PREFETCH_PROCESSES": ["-1"],
    "MIN_PARALLEL_TILES": ["0"],
    "DECODE_THREADS": ["-1"],
    "PREFETCH_AHEAD_WINDOWS": ["-1", "1.0"],
    "PREFETCH_BEHIND_WINDOWS": ["x"],
    "MAX_READ_MB": ["0", "x"],
    "CHUNK_BYTES": ["10", "1e9"],
    "MAX_CHANNELS_PER_READ": ["0"],
    "SHUTDOWN_GRACE_S": ["-1"],
    "REFRESH_INTERVAL_S": ["-1"],
    "CHANGE_NOTIFICATIONS": ["on", "inotify", ""],
    "DATA_ROOTS": ["relative/dir", "/no/such/dir/anywhere"],
    "TLS_CERT_FILE": ["/no/such/cert.pem"],
    "TLS_KEY_FILE": ["/no/such/key.pem"],
    "TLS_CLIENT_CA_FILE": ["/no/such/ca.pem"],
    "AUTH_TOKENS_FILE": ["/no/such/tokens"],
    "GRPC_REFLECTION": ["sometimes"],
    "METRICS_PORT": ["99999", "x"],
    "BIND_ADDRESS": ["example.org", "256.0.0.1", "::1:2:3:4:5:6:7:8"],
    "METRICS_BIND_ADDRESS": ["my laptop"],
    "HTTP_PORT": ["65536", "web"],
    "HTTP_BIND_ADDRESS": ["viewer.example.org"],
    "LOG_LEVEL": ["LOUD"],
    "LOG_FORMAT": ["xml"],
    "STREAM_STALL_TIMEOUT_S": ["-2", "soon", "inf"],
    "POINTS_MEMORY_MB": ["0", "-8", "x"],
}


def test_defaults_are_the_documented_ones():
    s = load_settings({})
    for attr, value in DOCUMENTED_DEFAULTS.items():
        assert getattr(s, attr) == value, attr
    assert s == Settings()


def test_published_names_are_all_honoured():
    assert set(PUBLISHED_NAMES) <= set(VARIABLES)


def test_every_field_has_a_variable():
    from dataclasses import fields

    attrs = {attr for attr, _ in VARIABLES.values()}
    assert {f.name for f in fields(Settings)} == attrs


def test_every_variable_documented_if_docs_exist():
    doc = ROOT / "docs" / "configuration.md"
    if not doc.exists():
        pytest.skip("docs/configuration.md is not written yet")
    text = doc.read_text()
    missing = [v for v in VARIABLES if v not in text]
    assert not missing, f"undocumented variables: {missing}"


def test_good_values_cover_every_variable(tmp_path, a_file):
    assert set(good_values(tmp_path, a_file)) == set(VARIABLES)


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_every_variable_parses(name, tmp_path, a_file):
    raw, expected = good_values(tmp_path, a_file)[name]
    env = {name: raw}
    if name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"):
        env.update({"TLS_CERT_FILE": a_file, "TLS_KEY_FILE": a_file})
    s = load_settings(env)
    attr = VARIABLES[name][0]
    assert getattr(s, attr) == expected


@pytest.mark.parametrize("name,raw", [(n, v) for n, vals in sorted(BAD_VALUES.items())
                                      for v in vals])
def test_bad_value_raises_config_error_naming_variable(name, raw):
    env = {name: raw}
    if name == "TLS_CLIENT_CA_FILE":
        pass   # a missing file is reported before the TLS pairing rule
    with pytest.raises(ConfigError) as e:
        load_settings(env)
    assert e.value.variable == name
    assert name in str(e.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_tls_needs_both_files(a_file):
    with pytest.raises(ConfigError) as e:
        load_settings({"TLS_CERT_FILE": a_file})
    assert e.value.variable == "TLS_KEY_FILE"
    with pytest.raises(ConfigError) as e:
        load_settings({"TLS_KEY_FILE": a_file})
    assert e.value.variable == "TLS_CERT_FILE"
    with pytest.raises(ConfigError) as e:
        load_settings({"TLS_CLIENT_CA_FILE": a_file})
    assert e.value.variable == "TLS_CLIENT_CA_FILE"


def test_metrics_port_must_differ_from_port():
    with pytest.raises(ConfigError) as e:
        load_settings({"PORT": "7000", "METRICS_PORT": "7000"})
    assert e.value.variable == "METRICS_PORT"


def test_ttl_zero_or_empty_disables():
    s = load_settings({"CACHE_TTL_S": "", "SESSION_TTL_S": "0"})
    assert s.cache_ttl_s is None and s.session_ttl_s is None


def test_effective_process_counts():
    s = load_settings({})
    assert s.effective_reader_processes == max(1, os.cpu_count() or 1)
    assert s.effective_prefetch_processes == max(1, os.cpu_count() or 1)
    s = load_settings({"READER_PROCESSES": "3", "PREFETCH_PROCESSES": "2"})
    assert (s.effective_reader_processes, s.effective_prefetch_processes) == (3, 2)


def test_replace_keeps_other_fields():
    s = load_settings({"PORT": "1234"}).replace(max_sessions=5)
    assert s.port == 1234 and s.max_sessions == 5


@pytest.mark.parametrize("name,raw", [("TILE_CACHE_MB", "lots"), ("USE_PROCESS_POOL", "ja")])
def test_server_refuses_bad_env_and_names_variable(name, raw):
    env = dict(os.environ)
    env.update({"PORT": "0", name: raw})
    proc = subprocess.run([sys.executable, "-m", "mef3io_server.server"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert name in proc.stderr
    assert "listening" not in proc.stderr
