"""Plots a soak's samples (benches/soak.rs writes them): the bridge's RSS, lane depths, ConfigMap
checkpoint size and publish latency over time, with the faults marked.
Usage: plot_soak.py SAMPLES.jsonl SUMMARY.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

samples = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
summary = json.load(open(sys.argv[2]))
t = [s["t_s"] / 60 for s in samples]


def lane(s, sink):
    return sum(v for k, v in s["metrics"].items() if k.startswith("lane_depth") and sink in k)


fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
axes[0].plot(t, [s["rss_kib"] / 1024 for s in samples], label="RSS (MiB)")
axes[0].plot(t, [s["threads"] for s in samples], label="threads")
axes[0].plot(t, [s["fds"] for s in samples], label="open descriptors")
axes[0].set_ylabel("bridge")
axes[1].plot(t, [lane(s, "nats") for s in samples], label="NATS lane")
axes[1].plot(t, [lane(s, "kafka") for s in samples], label="Kafka lane")
axes[1].set_ylabel("events queued")
axes[2].plot(t, [s["checkpoint_bytes"] / 1024 for s in samples], label="ConfigMap checkpoint (KiB)")
axes[2].set_ylabel("KiB")
for sink in ("nats", "kafka"):
    axes[3].plot(t, [s["latency"][sink]["p99_ms"] for s in samples], label=f"{sink} p99")
    axes[3].plot(t, [s["latency"][sink]["p50_ms"] for s in samples], label=f"{sink} p50", linestyle=":")
axes[3].set_yscale("log")
axes[3].set_ylabel("creation → run.started (ms)")
axes[3].set_xlabel("minutes")
for ax in axes:
    for f in summary["faults"]:
        ax.axvspan(f["at_s"] / 60, max(f["ended_s"], f["at_s"] + 2) / 60, color="red", alpha=0.15)
    ax.axvline(summary["window"]["from_s"] / 60, color="grey", linestyle="--")
    ax.legend(loc="upper left", fontsize=8)
axes[0].set_title(
    f"soak: {summary['duration_s'] / 60:.0f} min at {summary['rate']} updates/s "
    f"(faults shaded; measuring window after the dashed line)"
)
fig.tight_layout()
fig.savefig(sys.argv[3], dpi=80)
