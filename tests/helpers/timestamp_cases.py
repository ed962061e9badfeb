"""Raw `ts` values at and around every limit of the timestamp conversion, and the contract's expected result for
each, computed in plain Python (an oracle independent of Spark).

The contract (model_lib/data/events.py), after surrounding spaces are trimmed: epoch milliseconds are an optional minus
and 1-19 digits; ISO-8601 is a 4-digit-year date, an optional time with optional seconds and 1-9 fraction digits,
and an optional offset `Z` or +-HH[:MM] up to +-18:00 (none = UTC). Either way the instant lies in
0001-01-01 .. 9999-12-31T23:59:59.999999 UTC.
"""

from __future__ import annotations

import datetime as dt
import re

MIN_EPOCH_MS = -62_135_596_800_000
MAX_EPOCH_MS = 253_402_300_799_999
LONG_MAX = 2**63 - 1


# Offsets and dates at and past the contract's limits (tests/unit/test_events.py runs each through the rules).
OFFSETS = (
    "Z",
    "z",
    "+00:00",
    "+18:00",
    "-18:00",
    "+18:01",
    "-18:01",
    "+19:00",
    "+24:00",
    "+99:99",
    "+05:30",
    "-05:30",
    "+0530",
    "+05",
    "+5:30",
    "+05:60",
    "UTC",
    " +01:00",
    "+01:00:00",
)
MALFORMED_DATES = (
    "2024-02-29",
    "2023-02-29",
    "2024-02-30",
    "2024-13-01",
    "2024-00-10",
    "2024-01-32",
    "2024-01-10T24:00",
    "2024-01-10T23:60",
    "2024-01-10T23:59:60Z",
    "2024-01-10T12",
    "2024-01-10T1:00",
    "2024-01-10 12:00:00",
    "2024-01-10T12:00",
    "T12:00",
    "12:00",
    "2024",
    "2024-01",
    "20240110",
    "",
    "-",
    "+",
    "--1",
    "NaN",
    "Infinity",
    "null",
)


def boundary_values() -> list[str]:
    values: set[str] = set()
    for digits in range(1, 26):
        for body in ("9" * digits, "1" + "0" * (digits - 1), "17048448000000000000000000"[:digits]):
            for sign in ("", "-", "+"):
                values.add(sign + body)
    for zeros in range(1, 9):
        values.update({"0" * zeros + "1704844800000", "-" + "0" * zeros + "1"})
    # Each limit of the long arithmetic: the long range itself and the millis -> micros multiplication by 1000.
    for limit in (LONG_MAX, -LONG_MAX - 1, LONG_MAX // 1000, -(LONG_MAX // 1000), MAX_EPOCH_MS, MIN_EPOCH_MS):
        values.update(str(limit + delta) for delta in (-1, 0, 1))
    values.update(["1.7e12", "1704844800000.0", "1704844800000.5", "1E3", "-1e-3", "0x10", "1_000", " 12", "12 "])
    for year in ("0000", "0001", "0002", "9998", "9999", "10000", "+10000", "-0001", "99999", "294247"):
        for rest in ("-01-01", "-12-31T23:59:59.999999", "-01-01T00:00:00+01:00", "-12-31T23:59:59-01:00"):
            values.add(year + rest)
    for offset in OFFSETS:
        values.add("2024-01-10T12:00:00" + offset)
    for fraction_digits in range(1, 12):
        values.add("2024-01-10T12:00:00." + "9" * fraction_digits + "Z")
    values.update(MALFORMED_DATES)
    return sorted(values)


EPOCH_MS = re.compile(r"-?[0-9]{1,19}")
ISO = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?P<offset>Z|[+-](?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?"
)


CYCLE_MICROS = 146_097 * 86_400 * 1_000_000  # 400 Gregorian years: year 0 is computed as year 400


def expected_micros(text: str) -> int | None:
    """Microseconds since the epoch the contract gives `text`, or None when the line must be quarantined (bad_ts).
    Surrounding spaces are not part of a field (the parser trims every field)."""
    text = text.strip(" ")
    if EPOCH_MS.fullmatch(text):
        millis = int(text)
        return millis * 1000 if MIN_EPOCH_MS <= millis <= MAX_EPOCH_MS else None
    match = ISO.fullmatch(text)
    if not match:
        return None
    year, month, day = (int(part) for part in match["date"].split("-"))
    shift = CYCLE_MICROS if year == 0 else 0  # a local year 0 can still be year 1 in UTC after a negative offset
    try:
        local = dt.datetime(
            year + (400 if shift else 0),
            month,
            day,
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            int((match["fraction"] or "0").ljust(6, "0")[:6]),
        )
    except ValueError:
        return None
    offset_minutes = 0
    if match["oh"] is not None:
        hours, minutes = int(match["oh"]), int(match["om"] or 0)
        if minutes > 59 or hours * 60 + minutes > 18 * 60:
            return None
        offset_minutes = (hours * 60 + minutes) * (-1 if match["offset"].startswith("-") else 1)
    micros = (local - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) - shift - offset_minutes * 60_000_000
    return micros if MIN_EPOCH_MS * 1000 <= micros <= MAX_EPOCH_MS * 1000 + 999 else None
