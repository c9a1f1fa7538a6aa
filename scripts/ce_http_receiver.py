#!/usr/bin/env python3
"""An HTTP receiver on 127.0.0.1 that reads every POST with the official CloudEvents Python SDK's
HTTP binding (binary and structured mode; batches element by element through the JSON format),
refusing anything the SDK or the strict factory rejects, and writes each event it accepted as one
structured JSON line to --out, for validate_events.py to check.

Usage: ce_http_receiver.py --port-file F --out FILE --count N [--timeout S]
Binds an ephemeral port (written to --port-file), answers 202 (accepted) or 400 (rejected), and
exits after N events or S seconds: 0 when N events were accepted and none rejected.
"""
import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cloudevents.core.bindings.http import HTTPMessage, from_http  # noqa: E402
from cloudevents.core.formats.json import JSONFormat  # noqa: E402
from validate_events import Strict  # noqa: E402

args = argparse.ArgumentParser()
args.add_argument("--port-file", required=True)
args.add_argument("--out", required=True)
args.add_argument("--count", type=int, required=True)
args.add_argument("--timeout", type=float, default=120)
opts = args.parse_args()

lock = threading.Lock()
state = {"accepted": 0, "rejected": 0}
finished = threading.Event()
out = open(opts.out, "w", encoding="utf-8")


def events_of(headers, body):
    kind = headers.get("content-type", "").lower()
    if kind.startswith("application/cloudevents-batch"):
        if any(name.startswith("ce-") for name in headers):
            raise ValueError("a batch must not carry ce- headers")
        return [JSONFormat().read(Strict, json.dumps(item).encode()) for item in json.loads(body)]
    return [from_http(HTTPMessage(headers, body), JSONFormat(), Strict)]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            events = events_of(headers, body)
            lines = [JSONFormat().write(event).decode() for event in events]
        except Exception as err:  # the SDK's verdict, whatever its type
            with lock:
                state["rejected"] += 1
            print(f"rejected: {err}", file=sys.stderr)
            self.send_response(400)
            self.end_headers()
            return
        with lock:
            for line in lines:
                out.write(line + "\n")
            state["accepted"] += len(lines)
            if state["accepted"] >= opts.count:
                finished.set()
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(opts.port_file, "w") as f:
    f.write(str(server.server_address[1]))
threading.Thread(target=server.serve_forever, daemon=True).start()
finished.wait(opts.timeout)
server.shutdown()
out.close()
print(f"{state['accepted']} accepted, {state['rejected']} rejected (wanted {opts.count})")
sys.exit(0 if state["accepted"] == opts.count and state["rejected"] == 0 else 1)
