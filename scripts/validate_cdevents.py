#!/usr/bin/env python3
"""Independent check of the CDEvents `replay --format cdevents` prints: every line is parsed by
the official CloudEvents Python SDK (JSON event format) without letting it fill in anything,
checked against the CDEvents CloudEvents binding (type, source, subject, time and id are the
CDEvent's), and the custom events' data validated against their schemas in schemas/cdevents/.
(The standard events are read by the cdevents-sdk crate's types in tests/core/cdevents.rs.)

Usage: validate_cdevents.py SCHEMA_DIR FILE...
Prints `N passed, N failed` and exits non-zero on any failure.
"""
import glob
import json
import os
import sys

import jsonschema
from cloudevents.core.formats.json import JSONFormat

sys.path.insert(0, os.path.dirname(__file__))
from validate_events import RFC3339_UTC, Strict, validate_files  # noqa: E402


def check(line, schemas):
    raw = json.loads(line)
    event = JSONFormat().read(Strict, line.encode())
    attrs = event.get_attributes()
    data = event.get_data()
    context, subject = data["context"], data["subject"]
    if attrs["specversion"] != "1.0" or context["specversion"] != "0.5.1":
        raise ValueError("specversion")
    for ce, cd in (("id", context["id"]), ("source", context["source"]),
                   ("type", context["type"]), ("subject", subject["id"]),
                   ("time", context["timestamp"])):
        if raw.get(ce) != cd:
            raise ValueError(f"CloudEvent {ce} {raw.get(ce)!r} is not the CDEvent's {cd!r}")
    if not RFC3339_UTC.match(raw["time"]):
        raise ValueError("time is not RFC 3339 UTC")
    if raw.get("datacontenttype") != "application/json":
        raise ValueError("datacontenttype")
    ty = raw["type"]
    if ty.startswith("dev.cdeventsx."):
        schema = schemas[raw["dataschema"]]
        if context.get("schemaUri") != schema["$id"]:
            raise ValueError("schemaUri")
        jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
    elif not (ty.startswith("dev.cdevents.") and
              raw["dataschema"].startswith("https://cdevents.dev/0.5.1/schema/")):
        raise ValueError(f"type {ty!r} or dataschema {raw['dataschema']!r}")
    return raw["id"]


def main():
    schemas = {}
    for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
        schema = json.load(open(path))
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[schema["$id"]] = schema
    validate_files(sys.argv[2:], lambda line: check(line, schemas))


if __name__ == "__main__":
    main()
