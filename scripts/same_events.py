#!/usr/bin/env python3
"""Checks two files of structured CloudEvents (one per line) hold the same events, each exactly
once, attribute for attribute and data for data, in any order.

Usage: same_events.py EXPECTED ACTUAL
"""
import json
import sys


def load(path):
    events = {}
    for line in open(path, encoding="utf-8"):
        event = json.loads(line)
        if event["id"] in events:
            sys.exit(f"{path}: id {event['id']} appears twice")
        events[event["id"]] = event
    return events


want, got = load(sys.argv[1]), load(sys.argv[2])
missing = sorted(set(want) - set(got))
extra = sorted(set(got) - set(want))
changed = sorted(i for i in set(want) & set(got) if want[i] != got[i])
for label, ids in (("missing", missing), ("unexpected", extra), ("different", changed)):
    if ids:
        print(f"{label}: {len(ids)} (first: {ids[0]})", file=sys.stderr)
if missing or extra or changed:
    sys.exit(1)
print(f"{len(want)} events identical")
