#!/usr/bin/env python3
"""Scrapes a running bridge's /metrics until it counts `--events` published events on one sink,
then parses the exposition with the Prometheus Python client's OpenMetrics parser (an
independent implementation of the format) and checks the families and totals."""
import argparse
import sys
import time
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            content_type, text = fetch(f"http://{args.addr}/metrics")
            families = {f.name: f for f in text_string_to_metric_families(text)}
            published = sum(
                s.value
                for s in families["kfp_event_bridge_events_published"].samples
                if s.name.endswith("_total")
            )
            if published >= args.events:
                break
        except (OSError, KeyError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"metrics never showed {args.events} published events")
        time.sleep(0.2)
    assert content_type.startswith("application/openmetrics-text"), content_type
    facts = sum(s.value for s in families["kfp_event_bridge_facts"].samples if s.name.endswith("_total"))
    assert facts == args.events, (facts, args.events)
    assert families["kfp_event_bridge_facts"].type == "counter"
    assert families["kfp_event_bridge_publish_latency_seconds"].type == "histogram"
    assert families["kfp_run_duration_seconds"].type == "histogram"
    runs = sum(s.value for s in families["kfp_runs_finished"].samples if s.name.endswith("_total"))
    assert runs > 0, runs
    _, ready = fetch(f"http://{args.addr}/readyz")
    print(f"OpenMetrics parser: {len(families)} families, {int(published)} published, "
          f"{int(facts)} facts, {int(runs)} runs; /readyz: {ready.strip()}")


if __name__ == "__main__":
    main()
