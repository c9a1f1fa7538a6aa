#!/usr/bin/env python3
"""Writes a large recording for throughput measurements: the bundled recordings repeated with
fresh workflow names, uids and KFP run ids until at least --lines watch lines (default 100000).
Fresh run ids matter: the run id is the `partitionkey`, and copies sharing one would look like a
few very long runs to the delivery engine's per-run ordering.

Usage: gen_large_recording.py OUT [--lines N]
"""
import argparse
import json
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--lines", type=int, default=100_000)
a = ap.parse_args()

recordings = sorted((Path(__file__).resolve().parent.parent / "examples" / "recordings").glob("*.jsonl"))
templates = []
for path in recordings:
    lines = path.read_text().splitlines()
    names, uids = set(), set()
    for line in lines:
        obj = json.loads(line)["object"]
        if obj["kind"] == "Workflow":
            names.add(obj["metadata"]["name"]); uids.add(obj["metadata"]["uid"])
            run_id = obj["metadata"].get("labels", {}).get("pipeline/runid")
            if run_id:
                uids.add(run_id)
        else:
            names.add(obj["involvedObject"]["name"]); uids.add(obj["involvedObject"]["uid"])
    templates.append((lines, sorted(names), sorted(uids)))

written = copy = 0
with open(a.out, "w") as out:
    while written < a.lines:
        for lines, names, uids in templates:
            text = "\n".join(lines)
            for n in names:
                text = text.replace(n, f"{n}-c{copy}")
            for u in uids:
                text = text.replace(u, f"{u[:-8]}{copy:08x}")
            out.write(text + "\n")
            written += len(lines)
        copy += 1
print(f"{a.out}: {written} lines, {copy} copies of {len(templates)} recordings")
