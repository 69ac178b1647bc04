"""Times on the command line: uUTC, ISO 8601 (naive = UTC), offsets from the start."""
import datetime as dt

import pytest

from mef3io_server.timespec import (TimeSpecError, datetime_to_uutc, format_duration,
                                    format_uutc, parse_duration_us, parse_time,
                                    uutc_to_datetime)

T0 = 1_704_067_200_000_000   # 2024-01-01T00:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("1704067200000000", T0),
    ("1_704_067_200_000_000", T0),
    (" 1704067200000001 ", T0 + 1),
    ("2024-01-01T00:00:00Z", T0),
    ("2024-01-01T00:00:00z", T0),
    ("2024-01-01T00:00:00", T0),                      # no timezone: UTC
    ("2024-01-01 00:00:00", T0),
    ("2024-01-01", T0),
    ("2024-01-01T01:00:00+01:00", T0),
    ("2023-12-31T19:00:00-05:00", T0),
    ("2024-01-01T00:10:00.250Z", T0 + 600_250_000),
    ("2024-01-01T00:00:00.000001Z", T0 + 1),
    ("1969-12-31T23:59:59.5Z", -500_000),
])
def test_absolute_times(text, expected):
    assert parse_time(text) == expected
    assert parse_time(text, origin_uutc=123) == expected   # the origin only moves offsets


@pytest.mark.parametrize("text, offset_us", [
    ("+10m", 600_000_000),
    ("+1h30m", 5_400_000_000),
    ("+90s", 90_000_000),
    ("+500ms", 500_000),
    ("+1.5s", 1_500_000),
    ("+0.1s", 100_000),
    ("+2d", 172_800_000_000),
    ("+1h 2m 3s", 3_723_000_000),
    ("+7us", 7),
    ("+0s", 0),
    ("+1H30M", 5_400_000_000),
])
def test_offsets_from_the_start(text, offset_us):
    assert parse_time(text, origin_uutc=T0) == T0 + offset_us


def test_int_passes_through():
    assert parse_time(T0) == T0


@pytest.mark.parametrize("text", ["", "soon", "+", "+10", "+10x", "10m", "+m", "2024-13-01",
                                  "+1h-5m", "12:00", "+1.2.3s", "1e15"])
def test_bad_times_raise_a_clear_error(text):
    with pytest.raises(TimeSpecError) as e:
        parse_time(text, origin_uutc=T0)
    assert str(e.value)   # says why


def test_offset_without_origin():
    with pytest.raises(TimeSpecError, match="start is not known"):
        parse_time("+10m")


def test_durations():
    assert parse_duration_us("1h30m") == 5_400_000_000
    assert parse_duration_us("0.0000005s") == 1   # half a microsecond rounds up
    assert parse_duration_us("0.0000004s") == 0
    with pytest.raises(TimeSpecError):
        parse_duration_us("")
    with pytest.raises(TimeSpecError):
        parse_duration_us("abc")


def test_round_trips():
    for u in (T0, T0 + 1, T0 + 999_999, 0, 1_600_000_000_123_456):
        assert datetime_to_uutc(uutc_to_datetime(u)) == u
        assert datetime_to_uutc(uutc_to_datetime(u, local=False)) == u
        assert parse_time(format_uutc(u, local=False).replace(" ", "T")) == u
        assert parse_time(format_uutc(u)) == u   # local, with its offset
    assert uutc_to_datetime(T0, local=False) == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("us, text", [(5_400_000_000, "1h30m"), (0, "0s"), (90_000_000, "1m30s"),
                                      (1_500_000, "1.5s"), (86_400_000_000, "1d"),
                                      (-60_000_000, "-1m")])
def test_format_duration(us, text):
    assert format_duration(us) == text
    if us >= 0:
        assert parse_duration_us(text) == us
