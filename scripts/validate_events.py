#!/usr/bin/env python3
"""Independent check of what `replay` prints: every line is parsed by the official CloudEvents
Python SDK (JSON event format) without letting the SDK fill in anything, checked against the
spec rules the SDK does not enforce, and its `data` validated against schemas/event-data.v1.json.

Usage: validate_events.py SCHEMA FILE...   (each FILE holds structured CloudEvents, one per line)
Prints `N passed, N failed` and exits non-zero on any failure.
"""
import json
import re
import sys

import jsonschema
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

NAME = re.compile(r"^[a-z0-9]{1,20}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Strict(CloudEvent):
    """The SDK's CloudEvent invents a missing id, specversion and time; refuse instead."""

    def __init__(self, attributes, data=None):
        missing = [a for a in ("specversion", "id", "source", "type") if a not in attributes]
        if missing:
            raise ValueError(f"missing required attributes {missing}")
        super().__init__(attributes, data)


def check(line, schema):
    raw = json.loads(line)
    event = JSONFormat().read(Strict, line.encode())
    attrs = event.get_attributes()
    if attrs["specversion"] != "1.0":
        raise ValueError("specversion is not 1.0")
    for name in raw:
        if name not in ("data", "data_base64") and not NAME.match(name):
            raise ValueError(f"attribute name {name!r} breaks the naming rule")
    if "data" in raw and "data_base64" in raw:
        raise ValueError("both data and data_base64")
    if "time" in raw and not RFC3339_UTC.match(raw["time"]):
        raise ValueError(f"time {raw['time']!r} is not RFC 3339 UTC")
    if raw.get("datacontenttype") != "application/json" or not isinstance(event.get_data(), dict):
        raise ValueError("data is not a JSON object with datacontenttype application/json")
    if not raw["source"].startswith("https://") or not raw["dataschema"].startswith("urn:"):
        raise ValueError("source or dataschema not as configured")
    jsonschema.validate(event.get_data(), schema, format_checker=jsonschema.FormatChecker())
    return raw["source"], raw["id"]


def validate_files(paths, check):
    """Runs `check(line)` (returning the event's key) on every line of every file; a key seen twice
    in one file is a failure. Prints each failure and `N passed, N failed`; exits non-zero on any
    failure or when nothing passed."""
    ok = bad = 0
    for path in paths:
        seen = set()
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            try:
                key = check(line)
                if key in seen:
                    raise ValueError(f"duplicate key {key}")
                seen.add(key)
                ok += 1
            except Exception as exc:  # report every failure, keep going
                bad += 1
                print(f"{path}:{number}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{ok} passed, {bad} failed")
    sys.exit(1 if bad or not ok else 0)


def main():
    schema = json.load(open(sys.argv[1]))
    jsonschema.Draft202012Validator.check_schema(schema)
    validate_files(sys.argv[2:], lambda line: check(line, schema))


if __name__ == "__main__":
    main()
