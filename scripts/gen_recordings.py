#!/usr/bin/env python3
"""Writes the bundled recordings in examples/recordings/ (deterministic: same script, same bytes).

Each recording is a sequence of Kubernetes watch events, one JSON object per line, as a watch on
Workflows and Events in the run's namespace would have delivered them. The shapes follow Argo's
status.nodes (ids = <workflow>-<fnv32a(node name)>, v2 pod names), the KFP v2 compiler's node tree
(root driver, <task>-driver, executor DAG, executor pod) and KFP's labels and annotations; the
events follow Argo's workflow-controller (reasons, messages, node annotations, client-go
aggregation). Usage: scripts/gen_recordings.py [OUT_DIR]
"""
import base64
import copy
import datetime as dt
import gzip
import json
import sys
from pathlib import Path

BASE = dt.datetime(2026, 3, 14, 9, 0, 0, tzinfo=dt.timezone.utc)


def ts(sec):
    return (BASE + dt.timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%SZ")


def fnv32a(text):
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class Run:
    """A workflow whose status is changed step by step; every snapshot is one watch line."""

    def __init__(self, name, uid, ns="kubeflow-user", labels=None, annotations=None, spec=None, owners=None):
        self.name, self.uid, self.ns = name, uid, ns
        # Argo >= 3.2.5 writes the pod name format on every workflow it runs; an object without
        # it comes from an older controller.
        if annotations is None:
            annotations = {"workflows.argoproj.io/pod-name-format": "v2"}
        self.meta = {"name": name, "namespace": ns, "uid": uid, "generation": 1,
                     "creationTimestamp": ts(0), "labels": labels or {}, "annotations": annotations}
        if owners:
            self.meta["ownerReferences"] = owners
        self.spec = spec or {}
        self.status = {"phase": "", "startedAt": None, "finishedAt": None, "progress": "0/0", "nodes": {}}
        self.lines, self.rv, self.added, self.event_seq = [], 1000, False, 0
        self.compress = False

    def nid(self, name):
        return self.name if name == self.name else f"{self.name}-{fnv32a(name)}"

    def node(self, name, typ, template, t, display=None, parent=None, boundary=None, phase="Running"):
        nid = self.nid(name)
        n = {"id": nid, "name": name, "displayName": display or name.rsplit(".", 1)[-1], "type": typ,
             "templateName": template, "templateScope": f"local/{self.name}", "phase": phase, "startedAt": ts(t)}
        if boundary:
            n["boundaryID"] = self.nid(boundary)
        self.status["nodes"][nid] = n
        if parent:
            p = self.status["nodes"][self.nid(parent)]
            p.setdefault("children", []).append(nid)
        return n

    def set(self, name, phase, t=None, message=None, exit_code=None, host="gke-pool-1-7f3c"):
        n = self.status["nodes"][self.nid(name)]
        n["phase"] = phase
        if message is not None:
            if message:
                n["message"] = message
            else:
                n.pop("message", None)
        if phase in ("Succeeded", "Failed", "Error", "Skipped", "Omitted") and t is not None:
            n["finishedAt"] = ts(t)
            if n["type"] == "Pod" and phase != "Skipped":
                n["resourcesDuration"] = {"cpu": max(1, t // 10), "memory": max(1, t // 20)}
        if exit_code is not None:
            n.setdefault("outputs", {})["exitCode"] = str(exit_code)
        if n["type"] == "Pod" and phase in ("Running", "Succeeded", "Failed") and host:
            n["hostNodeName"] = host
        return n

    def workflow(self, phase, t=None, message=None):
        self.status["phase"] = phase
        if phase == "Running" and not self.status["startedAt"]:
            self.status["startedAt"] = ts(t)
        if phase in ("Succeeded", "Failed", "Error"):
            self.status["finishedAt"] = ts(t)
        if message:
            self.status["message"] = message
        self.meta["labels"]["workflows.argoproj.io/phase"] = phase
        if phase in ("Succeeded", "Failed", "Error"):
            self.meta["labels"]["workflows.argoproj.io/completed"] = "true"
            # The controller marks the workflow completed (operator.go, markWorkflowPhase); a
            # retry sets the condition False again.
            conditions = [c for c in self.status.get("conditions", []) if c["type"] != "Completed"]
            self.status["conditions"] = conditions + [{"status": "True", "type": "Completed"}]

    def progress(self):
        pods = [n for n in self.status["nodes"].values() if n["type"] == "Pod"]
        done = [n for n in pods if n["phase"] in ("Succeeded", "Skipped")]
        self.status["progress"] = f"{len(done)}/{len(pods)}"

    def obj(self):
        self.progress()
        status = copy.deepcopy(self.status)
        status = {k: v for k, v in status.items() if v is not None}
        if self.compress:
            raw = json.dumps(status.pop("nodes"), separators=(",", ":"), sort_keys=True).encode()
            status["compressedNodes"] = base64.b64encode(gzip.compress(raw, mtime=0)).decode()
        meta = copy.deepcopy(self.meta)
        meta["resourceVersion"] = str(self.rv)
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": meta,
                "spec": copy.deepcopy(self.spec), "status": status}

    def snap(self, kind=None):
        self.rv += 7
        kind = kind or ("MODIFIED" if self.added else "ADDED")
        self.added = True
        self.lines.append({"type": kind, "object": self.obj()})

    def event(self, reason, message, t, node=None, etype=None, count=1, annotate=True, aggregate=False):
        """A core/v1 Event as Argo's event recorder creates it (involvedObject = the Workflow)."""
        self.event_seq += 1
        self.rv += 1
        etype = etype or ("Normal" if reason in ("WorkflowRunning", "WorkflowSucceeded", "WorkflowNodeRunning",
                                                  "WorkflowNodeSucceeded") else "Warning")
        ann = {}
        if node and annotate and not aggregate:
            n = self.status["nodes"][self.nid(node)]
            start = BASE + dt.timedelta(seconds=0)
            if n.get("startedAt"):
                start = dt.datetime.strptime(n["startedAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
            ann = {"workflows.argoproj.io/node-id": n["id"], "workflows.argoproj.io/node-name": n["name"],
                   "workflows.argoproj.io/node-type": n["type"],
                   "workflows.argoproj.io/node-start-time": str(int(start.timestamp()) * 1_000_000_000)}
        name = f"{self.name}.{(0x1890000000000000 + self.event_seq * 7919 + fnv32a(self.uid)):x}"
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": self.ns, "uid": f"ev-{fnv32a(name):08x}-{self.event_seq:04d}",
                           "resourceVersion": str(self.rv), "creationTimestamp": ts(t)},
              "involvedObject": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": self.name,
                                 "namespace": self.ns, "uid": self.uid, "resourceVersion": str(self.rv - 1)},
              "reason": reason, "message": ("(combined from similar events): " if aggregate else "") + message,
              "source": {"component": "workflow-controller"}, "type": etype,
              "firstTimestamp": ts(t), "lastTimestamp": ts(t), "count": count,
              "reportingComponent": "", "reportingInstance": ""}
        if ann:
            ev["metadata"]["annotations"] = ann
        self.lines.append({"type": "ADDED", "object": ev})
        return ev

    def bump(self, ev, t):
        """client-go's de-duplication: the same event again patches count and lastTimestamp."""
        ev = copy.deepcopy(ev)
        ev["count"] += 1
        ev["lastTimestamp"] = ts(t)
        self.rv += 1
        ev["metadata"]["resourceVersion"] = str(self.rv)
        self.lines.append({"type": "MODIFIED", "object": ev})


# --- KFP v2 -----------------------------------------------------------------------------------

def driver_args(pipeline, kind, run_id):
    # KFP's API server replaces `{{workflow.uid}}` with the run's id before it submits the run.
    return ["--type", kind, "--pipeline_name", pipeline, "--run_id", run_id,
            "--run_name", "{{workflow.name}}", "--dag_execution_id", "{{inputs.parameters.parent-dag-id}}"]


def v2_spec(pipeline, tasks, params, run_id, retry_tasks=(), deadline=None):
    sha = f"{fnv32a(pipeline):08x}" * 8
    root_tasks = []
    for task, deps in tasks:
        root_tasks.append({"name": f"{task}-driver", "template": "system-container-driver",
                           **({"depends": " && ".join(f"{d}.Succeeded" for d in deps)} if deps else {}),
                           "arguments": {"parameters": [{"name": "task-name", "value": task},
                                                        {"name": "component", "value": f"{{{{workflow.parameters.components-{sha}}}}}"}]}})
        tmpl = "retry-system-container-executor" if task in retry_tasks else "system-container-executor"
        root_tasks.append({"name": task, "template": tmpl, "depends": f"{task}-driver.Succeeded",
                           "arguments": {"parameters": [
                               {"name": "pod-spec-patch", "value": f"{{{{tasks.{task}-driver.outputs.parameters.pod-spec-patch}}}}"},
                               {"default": "false", "name": "cached-decision",
                                "value": f"{{{{tasks.{task}-driver.outputs.parameters.cached-decision}}}}"}]}})
    spec = {
        "arguments": {"parameters": [
            {"name": f"components-{sha}", "value": json.dumps({"executorLabel": "exec-train", "inputDefinitions": {"parameters": {"lr": {"parameterType": "NUMBER_DOUBLE"}}}})},
            {"name": f"implementations-{sha}", "value": json.dumps({"command": ["sh", "-c", "python train.py"], "image": "ghcr.io/example/trainer:1.4"})},
            {"name": "components-root", "value": json.dumps({"dag": {"tasks": {t: {"componentRef": {"name": f"comp-{t}"}} for t, _ in tasks}}})}]},
        "entrypoint": "entrypoint",
        "podMetadata": {"annotations": {"pipelines.kubeflow.org/v2_component": "true"},
                        "labels": {"pipelines.kubeflow.org/v2_component": "true"}},
        "serviceAccountName": "pipeline-runner",
        "templates": [
            {"name": "system-container-driver", "container": {"command": ["driver"], "args": driver_args(pipeline, "CONTAINER", run_id), "image": "ghcr.io/kubeflow/kfp-driver:2.15.0"},
             "metadata": {"annotations": {"pipelines.kubeflow.org/runtime-role": "driver"}}},
            {"name": "system-container-executor", "dag": {"tasks": [{"name": "executor", "template": "system-container-impl", "when": "{{inputs.parameters.cached-decision}} != true"}]}},
            {"name": "retry-system-container-executor", "dag": {"tasks": [{"name": "executor", "template": "retry-system-container-impl", "when": "{{inputs.parameters.cached-decision}} != true"}]}},
            {"name": "system-container-impl", "container": {"command": ["should-be-overridden-during-runtime"], "image": "gcr.io/ml-pipeline/should-be-overridden-during-runtime"},
             "initContainers": [{"name": "kfp-launcher", "image": "ghcr.io/kubeflow/kfp-launcher:2.15.0", "command": ["launcher-v2"]}],
             "metadata": {"annotations": {"pipelines.kubeflow.org/runtime-role": "launcher"}}},
            {"name": "retry-system-container-impl", "container": {"command": ["should-be-overridden-during-runtime"], "image": "gcr.io/ml-pipeline/should-be-overridden-during-runtime"},
             "retryStrategy": {"limit": 2, "backoff": {"duration": "5s"}}},
            {"name": "root", "dag": {"tasks": root_tasks}},
            {"name": "system-dag-driver", "container": {"command": ["driver"], "args": driver_args(pipeline, "{{inputs.parameters.driver-type}}", run_id), "image": "ghcr.io/kubeflow/kfp-driver:2.15.0"}},
            {"name": "entrypoint", "dag": {"tasks": [
                {"name": "root-driver", "template": "system-dag-driver", "arguments": {"parameters": [
                    {"name": "component", "value": "{{workflow.parameters.components-root}}"},
                    {"name": "runtime-config", "value": json.dumps({"parameterValues": params}, separators=(",", ":"))},
                    {"name": "driver-type", "value": "ROOT_DAG"}]}},
                {"name": "root", "template": "root", "depends": "root-driver.Succeeded"}]}},
        ],
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return spec


def _driver_outputs(kind="CONTAINER", iterations=None, cached=False, condition="nil"):
    """The output parameters KFP's driver writes (`backend/src/v2/cmd/driver/main.go`)."""
    params = [{"name": "execution-id", "value": "1042"}, {"name": "condition", "value": condition}]
    if kind == "CONTAINER":
        params += [{"name": "cached-decision", "value": "true" if cached else "false"},
                   {"name": "pod-spec-patch", "value": "{}"}]
    else:
        params += [{"name": "iteration-count", "value": str(iterations or 0)}]
    return {"parameters": params}


def v2_run(name, uid, run_id, pipeline, tasks, params, run_name=None, retry_tasks=(), labels=None, owners=None):
    labels = {"pipeline/runid": run_id, "workflows.argoproj.io/phase": "Pending", **(labels or {})}
    ann = {"pipelines.kubeflow.org/run_name": run_name or f"Run of {pipeline}",
           "workflows.argoproj.io/pod-name-format": "v2"}
    r = Run(name, uid, labels=labels, annotations=ann, spec=v2_spec(pipeline, tasks, params, run_id, retry_tasks), owners=owners)
    return r


def v2_start(r, t):
    r.workflow("Running", t)
    r.node(r.name, "DAG", "entrypoint", t)
    r.node(f"{r.name}.root-driver", "Pod", "system-dag-driver", t, parent=r.name, boundary=r.name, phase="Pending")
    r.snap()
    r.event("WorkflowRunning", "Workflow Running", t)
    r.set(f"{r.name}.root-driver", "Running", message="")
    r.snap()
    r.event("WorkflowNodeRunning", f"Running node {r.name}.root-driver", t + 1, node=f"{r.name}.root-driver")
    r.set(f"{r.name}.root-driver", "Succeeded", t + 6, exit_code=0)
    r.status["nodes"][r.nid(f"{r.name}.root-driver")]["outputs"]["parameters"] = _driver_outputs("ROOT_DAG")["parameters"]
    r.node(f"{r.name}.root", "DAG", "root", t + 7, parent=f"{r.name}.root-driver", boundary=r.name)
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {r.name}.root-driver", t + 7, node=f"{r.name}.root-driver")


def v2_driver(r, task, t, cached=False, after=None):
    """The task's driver, then its executor DAG. Argo makes a DAG task a child of its
    dependencies' outbound nodes (the upstream task's executor pod), the first tasks children of
    the DAG (`dag.go`)."""
    root = f"{r.name}.root"
    d = f"{root}.{task}-driver"
    parent = f"{root}.{after}.executor" if after else root
    r.node(d, "Pod", "system-container-driver", t, parent=parent, boundary=root, phase="Pending")
    r.snap()
    r.set(d, "Running", message="")
    r.snap()
    r.set(d, "Succeeded", t + 5, exit_code=0)
    r.status["nodes"][r.nid(d)]["outputs"]["parameters"] = _driver_outputs(cached=cached)["parameters"]
    r.node(f"{root}.{task}", "DAG", "system-container-executor", t + 6, parent=d, boundary=root)
    if cached:
        ex = r.node(f"{root}.{task}.executor", "Skipped", "system-container-impl", t + 6, parent=f"{root}.{task}",
                    boundary=f"{root}.{task}", phase="Skipped")
        ex["message"] = "when 'true != true' evaluated false"
        ex["finishedAt"] = ts(t + 6)
        r.set(f"{root}.{task}", "Succeeded", t + 6)
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {d}", t + 6, node=d)
    r.event("WorkflowNodeRunning", f"Running node {root}.{task}", t + 6, node=f"{root}.{task}")
    if cached:
        r.event("WorkflowNodeSucceeded", f"Succeeded node {root}.{task}", t + 6, node=f"{root}.{task}")


def v2_exec_pod(r, task, t, phase="Pending", message="ContainerCreating"):
    root = f"{r.name}.root"
    p = f"{root}.{task}.executor"
    r.node(p, "Pod", "system-container-impl", t, parent=f"{root}.{task}", boundary=f"{root}.{task}", phase=phase)
    if message:
        r.status["nodes"][r.nid(p)]["message"] = message
    return p


def v2_last_task_succeeds(r, task, t):
    """The run's last task pod succeeds at t; its DAG, the root DAG and the run follow."""
    root = f"{r.name}.root"
    r.set(f"{root}.{task}.executor", "Succeeded", t, exit_code=0)
    r.set(f"{root}.{task}", "Succeeded", t + 1)
    r.set(root, "Succeeded", t + 1)
    r.set(r.name, "Succeeded", t + 2)
    r.workflow("Succeeded", t + 2)
    r.snap()


def rec_v2_success():
    r = v2_run("iris-training-8xk2p", "5f1c9a2e-3b7d-4c1e-9a0f-2d8e6b4c7a11", "b7e4c3d2-9a1f-4e8b-8c6d-1f2e3a4b5c6d",
               "iris-training", [("load-data", []), ("train-model", ["load-data"]), ("evaluate", ["train-model"])],
               {"learning_rate": 0.01, "epochs": 20, "dataset": "gs://example-data/iris.csv"}, run_name="nightly iris")
    v2_start(r, 2)
    root = f"{r.name}.root"
    v2_driver(r, "load-data", 10, cached=True)
    v2_driver(r, "train-model", 20, after="load-data")
    p = v2_exec_pod(r, "train-model", 27)
    r.snap()
    r.set(p, "Pending", message="PodInitializing")
    r.snap()
    r.set(p, "Running", message="")
    r.snap()
    r.event("WorkflowNodeRunning", f"Running node {p}", 31, node=p)
    r.set(p, "Succeeded", 95, exit_code=0)
    r.set(f"{root}.train-model", "Succeeded", 96)
    r.snap()
    ev = r.event("WorkflowNodeSucceeded", f"Succeeded node {p}", 96, node=p)
    r.event("WorkflowNodeSucceeded", f"Succeeded node {root}.train-model", 96, node=f"{root}.train-model")
    r.bump(ev, 97)
    v2_driver(r, "evaluate", 100, after="train-model")
    p = v2_exec_pod(r, "evaluate", 107, phase="Running", message="")
    r.snap()
    v2_last_task_succeeds(r, "evaluate", 130)
    # The 11th similar event of this workflow in ten minutes: client-go aggregates it, no annotations.
    r.event("WorkflowNodeSucceeded", f"Succeeded node {p}", 131, node=p, aggregate=True, count=2)
    r.event("WorkflowSucceeded", "Workflow completed", 132)
    return r.lines


def rec_v2_retries_fail():
    r = v2_run("fraud-detector-q7w2m", "0c2d4e6f-8a1b-4c3d-9e5f-7a9b1c3d5e7f", "3a5c7e9b-1d2f-4a6b-8c0d-e2f4a6b8c0d1",
               "fraud-detector", [("featurize", []), ("train", ["featurize"])], {"threshold": "0.8", "region": "eu-west-1"},
               retry_tasks=("train",))
    v2_start(r, 1)
    root = f"{r.name}.root"
    v2_driver(r, "featurize", 9)
    p = v2_exec_pod(r, "featurize", 16, phase="Running", message="")
    r.snap()
    r.set(p, "Succeeded", 40, exit_code=0)
    r.set(f"{root}.featurize", "Succeeded", 41)
    r.snap()
    v2_driver(r, "train", 42, after="featurize")
    r.status["nodes"][r.nid(f"{root}.train")]["templateName"] = "retry-system-container-executor"
    retry = r.node(f"{root}.train.executor", "Retry", "retry-system-container-impl", 49, parent=f"{root}.train",
                   boundary=f"{root}.train")
    t = 49
    for attempt in range(3):
        pod = f"{root}.train.executor({attempt})"
        n = r.node(pod, "Pod", "retry-system-container-impl", t, display=f"executor({attempt})",
                   parent=f"{root}.train.executor", boundary=f"{root}.train", phase="Running")
        n["nodeFlag"] = {"retried": True}
        r.snap()
        r.set(pod, "Failed", t + 20, message="main: Error (exit code 1)", exit_code=1)
        if attempt == 2:
            retry["phase"] = "Failed"
            retry["message"] = "No more retries left"
            retry["finishedAt"] = ts(t + 20)
            r.set(f"{root}.train", "Failed", t + 21)
            r.set(root, "Failed", t + 21)
            r.set(r.name, "Failed", t + 22)
            r.workflow("Failed", t + 22)
        r.snap()
        r.event("WorkflowNodeFailed", f"Failed node {pod}: main: Error (exit code 1)", t + 20, node=pod)
        t += 26
    # The workflow's message is its root node's, and Argo writes none on DAG nodes.
    r.event("WorkflowFailed", "", t)
    return r.lines


def rec_v2_imagepull_terminate():
    r = v2_run("llm-eval-k9d4s", "7d9f1b3c-5e7a-4b9c-8d1e-3f5a7b9c1d2e", "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
               "llm-eval", [("score", [])], {"model": "llama-3-8b", "batch_size": 16})
    v2_start(r, 0)
    root = f"{r.name}.root"
    v2_driver(r, "score", 8)
    p = v2_exec_pod(r, "score", 15)
    r.snap()
    r.set(p, "Pending", message="PodInitializing")
    r.snap()
    image = "ghcr.io/example/llm-scorer:v9-does-not-exist"
    r.set(p, "Pending", message=f'ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found')
    r.snap()
    for _ in range(2):  # Kubernetes alternates the two; one warning per category all the same
        r.set(p, "Pending", message=f'ImagePullBackOff: Back-off pulling image "{image}"')
        r.snap()
        r.set(p, "Pending", message=f'ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found')
        r.snap()
    # The user presses Terminate: KFP patches activeDeadlineSeconds to 0.
    r.spec["activeDeadlineSeconds"] = 0
    r.snap()
    # Past the deadline Argo fails the pending pod's node (`failNodesWithoutCreatedPodsAfterDeadline`
    # ... "Step exceeded its deadline", operator.go); the DAG nodes fail without a message.
    r.set(p, "Failed", 400, message="Step exceeded its deadline")
    r.set(f"{root}.score", "Failed", 400)
    r.set(root, "Failed", 400)
    r.set(r.name, "Failed", 401)
    r.workflow("Failed", 401)
    r.snap()
    r.event("WorkflowNodeFailed", f"Failed node {p}: Step exceeded its deadline", 400, node=p)
    r.event("WorkflowTimedOut", "Workflow timed out", 401)
    r.event("WorkflowFailed", "", 401)
    return r.lines


def rec_v2_unschedulable():
    r = v2_run("gpu-finetune-2bq8z", "9b1d3f5a-7c9e-4a2b-8c4d-6e8f0a2b4c6d", "e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a8b",
               "gpu-finetune", [("finetune", [])], {"base_model": "resnet50", "gpus": 1})
    v2_start(r, 0)
    v2_driver(r, "finetune", 8)
    p = v2_exec_pod(r, "finetune", 15, message="")
    r.snap()
    r.set(p, "Pending", message="Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod.")
    r.snap()
    r.set(p, "Pending", message="Unschedulable: 0/5 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 4 Insufficient nvidia.com/gpu.")
    r.snap()
    r.set(p, "Pending", message="PodInitializing")
    r.snap()
    r.set(p, "Running", message="", host="gke-gpu-pool-a100-1")
    r.snap()
    r.event("WorkflowNodeRunning", f"Running node {p}", 240, node=p)
    v2_last_task_succeeds(r, "finetune", 900)
    r.event("WorkflowSucceeded", "Workflow completed", 902)
    return r.lines


def rec_v2_oomkilled():
    r = v2_run("embeddings-build-x4c7n", "2e4a6c8e-0b2d-4f6a-8b0c-2d4e6f8a0b2c", "f7a8b9c0-d1e2-4f3a-8b4c-5d6e7f8a9b0c",
               "embeddings-build", [("embed", [])], {"shards": 64})
    v2_start(r, 0)
    root = f"{r.name}.root"
    v2_driver(r, "embed", 8)
    p = v2_exec_pod(r, "embed", 15, phase="Running", message="")
    r.snap()
    r.set(p, "Failed", 300, message="main: OOMKilled (exit code 137)", exit_code=137)
    r.set(f"{root}.embed", "Failed", 301)
    r.set(root, "Failed", 301)
    r.set(r.name, "Failed", 302)
    r.workflow("Failed", 302)
    r.snap()
    r.event("WorkflowNodeFailed", f"Failed node {p}: main: OOMKilled (exit code 137)", 300, node=p)
    r.event("WorkflowFailed", "", 302)
    return r.lines


def rec_v2_compressed():
    tasks = [(f"shard-{i:02d}", []) for i in range(12)]
    r = v2_run("batch-score-m3p9t", "4c6e8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a2c", "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c6d",
               "batch-score", tasks, {"date": "2026-03-14"})
    r.compress = True
    v2_start(r, 0)
    root = f"{r.name}.root"
    for i, (task, _) in enumerate(tasks):
        v2_driver(r, task, 10 + i)
        v2_exec_pod(r, task, 17 + i, phase="Running", message="")
    r.snap()
    for i, (task, _) in enumerate(tasks):
        r.set(f"{root}.{task}.executor", "Succeeded", 60 + i, exit_code=0)
        r.set(f"{root}.{task}", "Succeeded", 61 + i)
    r.set(root, "Succeeded", 75)
    r.set(r.name, "Succeeded", 76)
    r.workflow("Succeeded", 76)
    r.snap()
    r.event("WorkflowSucceeded", "Workflow completed", 76)
    return r.lines


def rec_recurring():
    owner = [{"apiVersion": "kubeflow.org/v1beta1", "kind": "ScheduledWorkflow", "name": "daily-report",
              "uid": "8f7e6d5c-4b3a-4291-8e7f-6a5b4c3d2e1f", "controller": True, "blockOwnerDeletion": True}]
    labels = {"scheduledworkflows.kubeflow.org/isOwnedByScheduledWorkflow": "true",
              "scheduledworkflows.kubeflow.org/scheduledWorkflowName": "daily-report",
              "scheduledworkflows.kubeflow.org/workflowEpoch": "1773478800",
              "scheduledworkflows.kubeflow.org/workflowIndex": "42"}
    r = v2_run("daily-report-1773478800", "6a8c0e2a-4c6e-4a8c-8e0a-4c6e8a0c2e4a", "d0c1b2a3-9f8e-4d7c-8b6a-5f4e3d2c1b0a",
               "daily-report", [("report", [])], {"day": "2026-03-14"}, run_name="daily-report-1773478800",
               labels=labels, owners=owner)
    v2_start(r, 0)
    v2_driver(r, "report", 8)
    p = v2_exec_pod(r, "report", 15, phase="Running", message="")
    r.snap()
    v2_last_task_succeeds(r, "report", 50)
    r.event("WorkflowSucceeded", "Workflow completed", 52)
    return r.lines


# --- KFP v1 and plain Argo ----------------------------------------------------------------------

def rec_v1():
    spec = {"entrypoint": "tacos-vs-burritos",
            "arguments": {"parameters": [{"name": "tag", "value": "latest"}, {"name": "sleep_ms", "value": "10"}]},
            "serviceAccountName": "pipeline-runner",
            "templates": [
                {"name": "tacos-vs-burritos", "dag": {"tasks": [
                    {"name": "dataprocessing", "template": "dataprocessing"},
                    {"name": "training", "template": "training", "dependencies": ["dataprocessing"]}]}},
                {"name": "dataprocessing", "container": {"image": "example/dataprocessing:latest"},
                 "metadata": {"labels": {"pipelines.kubeflow.org/cache_enabled": "true"}}},
                {"name": "training", "container": {"image": "example/training:latest"}}]}
    ann = {"pipelines.kubeflow.org/kfp_sdk_version": "1.8.22", "pipelines.kubeflow.org/run_name": "tacos v3",
           "pipelines.kubeflow.org/pipeline_spec": json.dumps({"name": "tacos-vs-burritos", "inputs": [{"name": "tag"}, {"name": "sleep_ms"}]}),
           "workflows.argoproj.io/pod-name-format": "v1"}
    r = Run("tacos-vs-burritos-vw8g9", "1a3c5e7a-9c1e-4a3c-8e5a-7c9e1a3c5e7a", ns="kubeflow",
            labels={"pipeline/runid": "2b4d6f8b-0d2f-4b4d-8f6b-8d0f2b4d6f8b", "pipelines.kubeflow.org/kfp_sdk_version": "1.8.22"},
            annotations=ann, spec=spec)
    r.workflow("Running", 1)
    r.node(r.name, "DAG", "tacos-vs-burritos", 1)
    dp = f"{r.name}.dataprocessing"
    r.node(dp, "Pod", "dataprocessing", 1, parent=r.name, boundary=r.name, phase="Pending")
    r.snap()
    r.event("WorkflowRunning", "Workflow Running", 1)
    r.set(dp, "Running", message="")
    r.snap()
    r.event("WorkflowNodeRunning", f"Running node {dp}", 4, node=dp)
    r.set(dp, "Succeeded", 20, exit_code=0)
    tr = f"{r.name}.training"
    r.node(tr, "Pod", "training", 21, parent=dp, boundary=r.name, phase="Running")
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {dp}", 20, node=dp)
    r.event("WorkflowNodeRunning", f"Running node {tr}", 22, node=tr)
    r.set(tr, "Succeeded", 80, exit_code=0)
    r.set(r.name, "Succeeded", 81)
    r.workflow("Succeeded", 81)
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {tr}", 80, node=tr)
    r.event("WorkflowSucceeded", "Workflow completed", 81)
    return r.lines


def rec_argo_steps():
    spec = {"entrypoint": "main",
            "arguments": {"parameters": [{"name": "greeting", "value": "hello"}]},
            "templates": [
                {"name": "main", "steps": [[{"name": "step-1", "template": "echo"}],
                                           [{"name": "step-2", "template": "flaky"},
                                            {"name": "cleanup", "template": "echo", "when": "false"}]]},
                {"name": "echo", "container": {"image": "alpine:3.20", "command": ["echo", "{{workflow.parameters.greeting}}"]}},
                {"name": "flaky", "retryStrategy": {"limit": 2}, "script": {"image": "python:3.12", "source": "import random"}}]}
    r = Run("hello-steps-7tq2c", "3e5a7c9e-1a3c-4e5a-8c9e-1a3c5e7a9c1e", ns="argo", spec=spec,
            labels={"workflows.argoproj.io/creator": "system-serviceaccount-argo-argo-server"})
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    g0 = f"{r.name}[0]"
    r.node(g0, "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    s1 = f"{g0}.step-1"
    r.node(s1, "Pod", "echo", 0, parent=g0, boundary=r.name, phase="Pending")
    r.snap()
    r.event("WorkflowRunning", "Workflow Running", 0)
    r.set(s1, "Running", message="")
    r.snap()
    r.set(s1, "Succeeded", 6, exit_code=0)
    r.set(g0, "Succeeded", 7)
    g1 = f"{r.name}[1]"
    r.node(g1, "StepGroup", "main", 7, display="[1]", parent=g0, boundary=r.name)
    s2 = f"{g1}.step-2"
    r.node(s2, "Retry", "flaky", 7, parent=g1, boundary=r.name)
    sk = r.node(f"{g1}.cleanup", "Skipped", "echo", 7, parent=g1, boundary=r.name, phase="Skipped")
    sk["message"] = "when 'false' evaluated false"
    sk["finishedAt"] = ts(7)
    a0 = f"{s2}(0)"
    r.node(a0, "Pod", "flaky", 7, display="step-2(0)", parent=s2, boundary=r.name)
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {s1}", 6, node=s1)
    r.set(a0, "Failed", 12, message="Error (exit code 1)", exit_code=1)
    a1 = f"{s2}(1)"
    r.node(a1, "Pod", "flaky", 17, display="step-2(1)", parent=s2, boundary=r.name)
    r.snap()
    r.event("WorkflowNodeFailed", f"Failed node {a0}: Error (exit code 1)", 12, node=a0)
    r.set(a1, "Succeeded", 25, exit_code=0)
    r.set(s2, "Succeeded", 25)
    r.set(g1, "Succeeded", 26)
    r.set(r.name, "Succeeded", 26)
    r.workflow("Succeeded", 26)
    r.snap()
    r.event("WorkflowNodeSucceeded", f"Succeeded node {a1}", 25, node=a1)
    r.event("WorkflowSucceeded", "Workflow completed", 26)
    r.snap("DELETED")
    return r.lines


def rec_offloaded_and_gone():
    """Two cases where the status cannot tell: a workflow whose nodes Argo offloaded to its database,
    and one deleted (TTL) before the bridge ever saw it, known only from its Events."""
    r = v2_run("big-sweep-9f3kd", "8e0a2c4e-6a8c-4e0a-8c4e-6a8c0e2a4c6e", "b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
               "big-sweep", [("trial", [])], {"trials": 500})
    v2_start(r, 0)
    root = f"{r.name}.root"
    v2_driver(r, "trial", 8)
    p = v2_exec_pod(r, "trial", 15, phase="Running", message="")
    nodes = r.status
    # From here on the controller offloads the node status (persistence.nodeStatusOffLoad).
    r.status = dict(nodes)
    r.status["nodes"] = {}
    r.status["offloadNodeStatusVersion"] = "fnv:2386146437"
    r.snap()
    r.status = nodes
    r.event("WorkflowNodeRunning", f"Running node {p}", 16, node=p)
    r.set(p, "Succeeded", 70, exit_code=0)
    r.set(f"{root}.trial", "Succeeded", 71)
    r.set(root, "Succeeded", 71)
    r.set(r.name, "Succeeded", 72)
    r.workflow("Succeeded", 72)
    # Node events are recorded right after the status update; here the watch delivers them first.
    r.event("WorkflowNodeSucceeded", f"Succeeded node {p}", 70, node=p)
    r.status = dict(nodes)
    r.status["nodes"] = {}
    r.status["offloadNodeStatusVersion"] = "fnv:998877661"
    r.snap()
    r.status = nodes
    r.event("WorkflowSucceeded", "Workflow completed", 72)
    lines = r.lines

    g = Run("nightly-etl-5v8wq", "5a7c9e1a-3c5e-4a7c-9e1a-3c5e7a9c1e3a", ns="kubeflow-user")
    g.status["nodes"] = {}
    for name, typ in [(g.name, "DAG"), (f"{g.name}.extract", "Pod"), (f"{g.name}.load", "Pod")]:
        g.node(name, typ, name.rsplit(".", 1)[-1], 0)
    g.event("WorkflowRunning", "Workflow Running", 0)
    g.event("WorkflowNodeRunning", f"Running node {g.name}.extract", 1, node=f"{g.name}.extract")
    ev = g.event("WorkflowNodeSucceeded", f"Succeeded node {g.name}.extract", 30, node=f"{g.name}.extract")
    g.bump(ev, 31)
    g.event("WorkflowNodeRunning", f"Running node {g.name}.load", 31, node=f"{g.name}.load")
    g.set(f"{g.name}.load", "Failed", 45, message="main: Error (exit code 2)")
    g.event("WorkflowNodeFailed", f"Failed node {g.name}.load: main: Error (exit code 2)", 45, node=f"{g.name}.load")
    g.event("WorkflowFailed", "", 46)
    # Argo's own ArtifactGCFailed is not a fact; it is counted, not published.
    g.event("ArtifactGCFailed", "Artifact Garbage Collection failed for strategy OnWorkflowDeletion", 47)
    # Not from Argo at all: ignored.
    other = copy.deepcopy(g.lines[-1])
    other["object"]["source"] = {"component": "default-scheduler"}
    other["object"]["reason"] = "Scheduled"
    other["object"]["metadata"]["name"] += "x"
    g.lines.append(other)
    return lines + g.lines


# --- Retries of finished runs ---------------------------------------------------------------
# Both rewrite the finished Workflow in place (same uid; re-created nodes keep their ids, which
# are a hash of the node name). Modelled on KFP's backend `Workflow.GenerateRetryExecution`
# (common/util/workflow.go) and Argo's `FormulateRetryWorkflow` (workflow/util/util.go).

FAILED = ("Failed", "Error")


def _prune(r, removed):
    for n in r.status["nodes"].values():
        if "children" in n:
            n["children"] = [c for c in n["children"] if c not in removed]
            if not n["children"]:
                del n["children"]
        if "outboundNodes" in n:
            n["outboundNodes"] = [c for c in n["outboundNodes"] if c not in removed]


def kfp_retry(r):
    """KFP's RetryRun: Succeeded and Skipped nodes stay; failed, errored or omitted DAG nodes are
    set Running again (message and finishedAt cleared, startedAt kept); every other failed or
    omitted node is dropped (its pod deleted). The run's startedAt is kept."""
    labels = r.meta["labels"]
    labels.pop("workflows.argoproj.io/completed", None)
    labels.pop("pipeline/persistedFinalState", None)
    labels["workflows.argoproj.io/phase"] = "Running"
    r.status["phase"] = "Running"
    r.status["conditions"] = [{"status": "False", "type": "Completed"}]
    r.status.pop("message", None)
    r.status["finishedAt"] = None
    if r.spec.get("activeDeadlineSeconds") == 0:
        del r.spec["activeDeadlineSeconds"]
    removed = set()
    for nid, n in list(r.status["nodes"].items()):
        if n["phase"] in ("Succeeded", "Skipped") and ".onExit" not in n["name"]:
            continue
        if n["type"] == "DAG" and n["phase"] in FAILED + ("Omitted",):
            n["phase"] = "Running"
            n.pop("message", None)
            n.pop("finishedAt", None)
            continue
        removed.add(nid)
        del r.status["nodes"][nid]
    _prune(r, removed)


def argo_retry(r, t, restart=()):
    """`argo retry` (FormulateRetryWorkflow): failed Pod nodes (a Retry node's attempts: the Retry
    node) and, with --restart-successful, the nodes the --node-field-selector picks are deleted with
    everything downstream; their group ancestors (DAG, Steps, StepGroup, TaskGroup) and failed Retry
    ancestors are reset to Running with startedAt = now; exit-handler nodes are dropped; the run's
    phase becomes "" (the controller then sets Running), startedAt now, finishedAt and message
    cleared."""
    nodes = r.status["nodes"]
    parent = {c: n["id"] for n in nodes.values() for c in n.get("children", [])}
    targets = set()
    for nid, n in nodes.items():
        if (n["type"] == "Pod" and n["phase"] in FAILED) or n["displayName"] in restart:
            up = parent.get(nid)
            targets.add(up if up and nodes[up]["type"] == "Retry" else nid)
    delete = set()
    stack = list(targets)
    while stack:
        nid = stack.pop()
        if nid in delete or nid not in nodes:
            continue
        delete.add(nid)
        stack.extend(nodes[nid].get("children", []))
    reset = set()
    for nid in targets:
        up = parent.get(nid)
        while up:
            n = nodes[up]
            if n["type"] in ("DAG", "Steps", "StepGroup", "TaskGroup") or (n["type"] == "Retry" and n["phase"] in FAILED):
                reset.add(up)
            up = parent.get(up)
    for nid, n in nodes.items():
        if n["name"].startswith(f"{r.name}.onExit"):
            delete.add(nid)
    for nid in reset - delete:
        n = nodes[nid]
        if n["phase"] != "Skipped":
            n["phase"] = "Running"
        n.pop("message", None)
        n.pop("finishedAt", None)
        n["startedAt"] = ts(t)
    for nid in delete:
        del nodes[nid]
    _prune(r, delete)
    labels = r.meta["labels"]
    labels.pop("workflows.argoproj.io/completed", None)
    r.status["phase"] = ""
    r.status["startedAt"] = ts(t)
    r.status["finishedAt"] = None
    r.status.pop("message", None)
    r.status["conditions"] = [{"status": "False", "type": "Completed"}]
    r.spec.pop("shutdown", None)
    if r.spec.get("activeDeadlineSeconds") == 0:
        del r.spec["activeDeadlineSeconds"]


def _dag_spec(tasks):
    return {"entrypoint": "main",
            "templates": [{"name": "main", "dag": {"tasks": [
                {"name": n, "template": "step", **({"depends": " && ".join(d)} if d else {})} for n, d in tasks]}},
                {"name": "step", "container": {"image": "alpine:3.20", "command": ["sh", "-c", "exit 0"]}}]}


def _dag_task(r, name, t, parents, phase="Running"):
    """A DAG task pod; Argo lists a task under each task it depends on (the root for the first)."""
    full = f"{r.name}.{name}"
    r.node(full, "Pod", "step", t, parent=parents[0], boundary=r.name, phase=phase)
    for extra in parents[1:]:
        r.status["nodes"][r.nid(extra)].setdefault("children", []).append(r.nid(full))
    return full


def rec_kfp_v1_retry():
    """KFP v1: B fails, C is omitted, the run fails; the user retries it in the KFP UI; B and C run
    again and the run succeeds (the shape of KFP's own retry test, resource_manager_util_test.go)."""
    ann = {"pipelines.kubeflow.org/kfp_sdk_version": "1.8.22", "pipelines.kubeflow.org/run_name": "resubmit nightly",
           "pipelines.kubeflow.org/pipeline_spec": json.dumps({"name": "resubmit"}),
           "workflows.argoproj.io/pod-name-format": "v1"}
    r = Run("resubmit-hq4tz", "4a6c8e0a-2c4e-4a6c-8e0a-2c4e6a8c0e2a", ns="kubeflow",
            labels={"pipeline/runid": "6c8e0a2c-4e6a-4c8e-8a2c-4e6a8c0e2a4c"}, annotations=ann,
            spec=_dag_spec([("A", []), ("B", ["A"]), ("C", ["B"])]))
    r.workflow("Running", 0)
    r.node(r.name, "DAG", "main", 0)
    a = _dag_task(r, "A", 0, [r.name])
    r.snap()
    r.event("WorkflowRunning", "Workflow Running", 0)
    r.set(a, "Succeeded", 4, exit_code=0)
    b = _dag_task(r, "B", 12, [a])
    r.snap()
    r.set(b, "Failed", 16, message="failed with exit code 1", exit_code=1)
    c = r.node(f"{r.name}.C", "Skipped", "step", 22, parent=b, boundary=r.name, phase="Omitted")
    c["message"] = "omitted: depends condition not met"
    c["finishedAt"] = ts(22)
    r.set(r.name, "Failed", 22)
    r.workflow("Failed", 22)
    r.snap()
    r.event("WorkflowNodeFailed", f"Failed node {b}: failed with exit code 1", 16, node=b)
    r.event("WorkflowFailed", "", 22)
    # Minutes later, the retry.
    kfp_retry(r)
    r.snap()
    _dag_task(r, "B", 300, [a], phase="Pending")
    r.snap()
    r.set(b, "Running", message="")
    r.snap()
    r.event("WorkflowNodeRunning", f"Running node {b}", 302, node=b)
    r.set(b, "Succeeded", 309, exit_code=0)
    _dag_task(r, "C", 310, [b])
    r.snap()
    r.set(f"{r.name}.C", "Succeeded", 318, exit_code=0)
    r.set(r.name, "Succeeded", 319)
    r.workflow("Succeeded", 319)
    r.snap()
    r.event("WorkflowSucceeded", "Workflow completed", 319)
    return r.lines


def rec_kfp_v2_retry():
    """KFP v2: the `train` task's executor pod fails and the run fails; KFP's retry sets the failed
    DAG nodes (the task's executor DAG, root, entrypoint) Running and drops the failed pod; the pod
    runs again and the run succeeds."""
    r = v2_run("churn-model-t6v3j", "6e8a0c2e-4a6c-4e8a-8c2e-4a6c8e0a2c4e", "8a0c2e4a-6c8e-4a0c-8e4a-6c8e0a2c4e6a",
               "churn-model", [("prep", []), ("train", ["prep"])], {"epochs": 5})
    v2_start(r, 0)
    root = f"{r.name}.root"
    v2_driver(r, "prep", 8)
    p = v2_exec_pod(r, "prep", 15, phase="Running", message="")
    r.snap()
    r.set(p, "Succeeded", 30, exit_code=0)
    r.set(f"{root}.prep", "Succeeded", 31)
    r.snap()
    v2_driver(r, "train", 32, after="prep")
    p = v2_exec_pod(r, "train", 39, phase="Running", message="")
    r.snap()
    r.set(p, "Failed", 70, message="main: Error (exit code 1)", exit_code=1)
    r.set(f"{root}.train", "Failed", 71)
    r.set(root, "Failed", 71)
    r.set(r.name, "Failed", 72)
    r.workflow("Failed", 72)
    r.snap()
    r.event("WorkflowNodeFailed", f"Failed node {p}: main: Error (exit code 1)", 70, node=p)
    r.event("WorkflowFailed", "", 72)
    kfp_retry(r)
    r.snap()
    v2_exec_pod(r, "train", 600, phase="Running", message="")
    r.snap()
    # A late copy of the first attempt's failure: it belongs to the attempt that ended.
    r.event("WorkflowNodeFailed", f"Failed node {p}: main: Error (exit code 1)", 70, node=p)
    v2_last_task_succeeds(r, "train", 660)
    r.event("WorkflowSucceeded", "Workflow completed", 662)
    return r.lines


def rec_kfp_v2_terminated_retry():
    """KFP v2: the user terminates a run (activeDeadlineSeconds 0), then retries it: KFP lifts the
    deadline, and the task runs again and succeeds."""
    r = v2_run("batch-score-m2w8d", "0a2c4e6a-8c0e-4a2c-8e6a-8c0e2a4c6e8a", "2c4e6a8c-0e2a-4c4e-8a8c-0e2a4c6e8a0c",
               "batch-score", [("score", [])], {"batch_size": 32})
    v2_start(r, 0)
    root = f"{r.name}.root"
    v2_driver(r, "score", 8)
    p = v2_exec_pod(r, "score", 15, phase="Running", message="")
    r.snap()
    r.spec["activeDeadlineSeconds"] = 0
    r.snap()
    r.set(p, "Failed", 120, message="Step exceeded its deadline")
    r.set(f"{root}.score", "Failed", 120)
    r.set(root, "Failed", 120)
    r.set(r.name, "Failed", 121)
    r.workflow("Failed", 121)
    r.snap()
    kfp_retry(r)
    r.snap()
    v2_exec_pod(r, "score", 400, phase="Running", message="")
    r.snap()
    v2_last_task_succeeds(r, "score", 450)
    return r.lines


def rec_argo_dag_retry():
    """Plain Argo DAG (diamond): C fails, D is omitted, the run fails; `argo retry` deletes C and D,
    resets the DAG; C and D run and the run succeeds. The bridge sees the retry only after the fact
    for D: the watch missed nothing, but D's start and end arrive in one update."""
    r = Run("diamond-x7k2p", "7a9c1e3a-5c7e-4a9c-8e3a-5c7e9a1c3e5a", ns="argo",
            spec=_dag_spec([("A", []), ("B", ["A"]), ("C", ["A"]), ("D", ["B", "C"])]))
    r.workflow("Running", 0)
    r.node(r.name, "DAG", "main", 0)
    a = _dag_task(r, "A", 0, [r.name])
    r.snap()
    r.set(a, "Succeeded", 5, exit_code=0)
    b = _dag_task(r, "B", 6, [a])
    c = _dag_task(r, "C", 6, [a])
    r.snap()
    r.set(b, "Succeeded", 11, exit_code=0)
    r.set(c, "Failed", 12, message="main: Error (exit code 1)", exit_code=1)
    d = r.node(f"{r.name}.D", "Skipped", "step", 12, parent=b, boundary=r.name, phase="Omitted")
    r.status["nodes"][r.nid(c)].setdefault("children", []).append(d["id"])
    d["message"] = "omitted: depends condition not met"
    d["finishedAt"] = ts(12)
    # A DAG node fails without a message (`dag.go`); the workflow's message is its root's.
    r.set(r.name, "Failed", 13)
    r.workflow("Failed", 13)
    r.snap()
    argo_retry(r, 200)
    r.snap()
    r.workflow("Running", 200)
    _dag_task(r, "C", 201, [a])
    r.snap()
    r.set(c, "Succeeded", 207, exit_code=0)
    _dag_task(r, "D", 208, [b, c])
    r.snap()
    r.set(f"{r.name}.D", "Succeeded", 214, exit_code=0)
    r.set(r.name, "Succeeded", 215)
    r.workflow("Succeeded", 215)
    r.snap()
    return r.lines


def rec_argo_steps_retry():
    """Plain Argo steps, retried twice: step-2 (retryStrategy limit 1) fails both attempts and the
    run fails; `argo retry`; it fails again; `argo retry` once more and it succeeds."""
    spec = {"entrypoint": "main",
            "templates": [
                {"name": "main", "steps": [[{"name": "step-1", "template": "echo"}], [{"name": "step-2", "template": "flaky"}]]},
                {"name": "echo", "container": {"image": "alpine:3.20", "command": ["echo", "hi"]}},
                {"name": "flaky", "retryStrategy": {"limit": 1}, "script": {"image": "python:3.12", "source": "import random"}}]}
    r = Run("flaky-steps-9q2wd", "9c1e3a5c-7e9a-4c1e-8a5c-7e9a1c3e5a7c", ns="argo", spec=spec)
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    g0 = f"{r.name}[0]"
    r.node(g0, "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    s1 = f"{g0}.step-1"
    r.node(s1, "Pod", "echo", 0, parent=g0, boundary=r.name)
    r.snap()
    r.set(s1, "Succeeded", 5, exit_code=0)
    r.set(g0, "Succeeded", 6)
    g1 = f"{r.name}[1]"
    t = 6
    outcomes = [("Failed", "Failed"), ("Failed", "Failed"), ("Failed", "Succeeded")]
    for round_, (first, second) in enumerate(outcomes):
        if g1 not in [n["name"] for n in r.status["nodes"].values()]:
            r.node(g1, "StepGroup", "main", t, display="[1]", parent=s1, boundary=r.name)
        s2 = f"{g1}.step-2"
        r.node(s2, "Retry", "flaky", t, parent=g1, boundary=r.name)
        for i, phase in enumerate((first, second)):
            pod = f"{s2}({i})"
            r.node(pod, "Pod", "flaky", t, display=f"step-2({i})", parent=s2, boundary=r.name)
            r.snap()
            t += 10
            r.set(pod, phase, t, message="Error (exit code 1)" if phase == "Failed" else None,
                  exit_code=1 if phase == "Failed" else 0)
            t += 2
        if second == "Failed":
            r.set(s2, "Failed", t, message="No more retries left")
            r.set(g1, "Failed", t, message=f"child '{r.nid(s2)}' failed")
            r.set(r.name, "Failed", t + 1, message=f"child '{r.nid(g1)}' failed")
            r.workflow("Failed", t + 1, message=f"child '{r.nid(g1)}' failed")
            r.snap()
            t += 300
            argo_retry(r, t)
            r.snap()
            r.workflow("Running", t)
            r.set(g0, "Succeeded", t)  # the controller finds the reset first group complete
        else:
            r.set(s2, "Succeeded", t)
            r.set(g1, "Succeeded", t)
            r.set(r.name, "Succeeded", t + 1)
            r.workflow("Succeeded", t + 1)
            r.snap()
    return r.lines


def rec_argo_restart_successful():
    """`argo retry --restart-successful --node-field-selector displayName=report` of a run that
    succeeded: report runs again; fetch, kept, publishes nothing new."""
    r = Run("report-daily-b5n7q", "1c3e5a7c-9e1a-4c3e-8a7c-9e1a3c5e7a9c", ns="argo",
            spec=_dag_spec([("fetch", []), ("report", ["fetch"])]))
    r.workflow("Running", 0)
    r.node(r.name, "DAG", "main", 0)
    f = _dag_task(r, "fetch", 0, [r.name])
    r.snap()
    r.set(f, "Succeeded", 8, exit_code=0)
    rep = _dag_task(r, "report", 9, [f])
    r.snap()
    r.set(rep, "Succeeded", 20, exit_code=0)
    r.set(r.name, "Succeeded", 21)
    r.workflow("Succeeded", 21)
    r.snap()
    argo_retry(r, 900, restart=("report",))
    r.snap()
    r.workflow("Running", 900)
    _dag_task(r, "report", 901, [f])
    r.snap()
    r.set(rep, "Succeeded", 915, exit_code=0)
    r.set(r.name, "Succeeded", 916)
    r.workflow("Succeeded", 916)
    r.snap()
    return r.lines


# --- Fidelity to real node trees --------------------------------------------------------------

def rec_quota_pending():
    """Plain Argo: the pod of a retried step is refused by the namespace's ResourceQuota while other
    pods run (Argo keeps retrying its creation, the node stays Pending with the API's message), then
    it is created and succeeds. Shape and message after Argo's operator_test.go (exceeded quota)."""
    spec = {"entrypoint": "main",
            "templates": [{"name": "main", "retryStrategy": {"limit": 2},
                           "container": {"image": "alpine:3.20", "command": ["sh", "-c", "exit 0"]}}]}
    r = Run("quota-bound-r4k8w", "2c4e6a8c-0e2a-4c4e-8a8c-0e2a4c6e8a0d", ns="team-a", spec=spec)
    r.workflow("Running", 0)
    r.node(r.name, "Retry", "main", 0)
    pod = f"{r.name}(0)"
    r.node(pod, "Pod", "main", 0, display=f"{r.name}(0)", parent=r.name, boundary=r.name, phase="Pending")
    r.status["nodes"][r.nid(pod)]["message"] = (
        'pods "quota-bound-r4k8w" is forbidden: exceeded quota: compute-resources, requested: '
        'limits.memory=8Gi, used: limits.memory=60Gi, limited: limits.memory=64Gi')
    r.snap()
    r.snap()
    r.set(pod, "Pending", message="ContainerCreating")
    r.snap()
    r.set(pod, "Running", message="")
    r.snap()
    r.set(pod, "Succeeded", 95, exit_code=0)
    r.set(r.name, "Succeeded", 95)
    r.workflow("Succeeded", 96)
    r.snap()
    return r.lines


def rec_templates_null():
    """An Argo 2.9-era object run from a WorkflowTemplate: `spec.templates: null` (the templates
    live in the referenced template) and `null` lists in the nodes; it succeeds."""
    spec = {"entrypoint": "whalesay", "templates": None, "arguments": {"parameters": None},
            "workflowTemplateRef": {"name": "workflow-template-submittable"}}
    r = Run("from-template-k2p9x", "4e6a8c0e-2a4c-4e6a-8c0e-2a4c6e8a0c2e", ns="default", spec=spec,
            annotations={})
    r.workflow("Running", 0)
    n = r.node(r.name, "Pod", "whalesay", 0, phase="Running")
    n["children"] = None
    r.snap()
    r.set(r.name, "Succeeded", 9, exit_code=0)
    r.workflow("Succeeded", 9)
    r.status["nodes"][r.nid(r.name)]["outboundNodes"] = None
    r.snap()
    return r.lines


def rec_odd_field_types():
    """Fields of unexpected types where the bridge can do without them, as objects written from
    YAML or by other tools carry them (Argo's own controller tests hold a label `completed: true`):
    a boolean label value, a number as `status.progress` and as a node's `hostNodeName`: each is
    dropped, the object is used; a string as `estimatedDuration`, which the bridge does not
    read, changes nothing."""
    spec = {"entrypoint": "main", "templates": [{"name": "main", "steps": [[{"name": "work", "template": "work"}]]},
                                                {"name": "work", "container": {"image": "alpine:3.20"}}]}
    r = Run("odd-fields-t3m8q", "8c0e2a4c-6e8a-4c0e-8a4c-6e8a0c2e4a6d", ns="default", spec=spec)
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    r.node(f"{r.name}[0]", "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    r.node(f"{r.name}[0].work", "Pod", "work", 1, parent=f"{r.name}[0]", boundary=r.name)
    r.snap()
    r.set(f"{r.name}[0].work", "Succeeded", 20, exit_code=0)
    r.set(f"{r.name}[0]", "Succeeded", 20)
    r.set(r.name, "Succeeded", 21)
    r.workflow("Succeeded", 21)
    r.snap()
    work = r.nid(f"{r.name}[0].work")
    for line in r.lines:
        obj = line["object"]
        obj["metadata"]["labels"]["example.com/from-yaml"] = True
        obj["status"]["progress"] = 1
        obj["status"]["nodes"][work]["hostNodeName"] = 12
        obj["status"]["estimatedDuration"] = "soon"
    return r.lines


def rec_hooks_and_exit_handlers():
    """Plain Argo steps (Argo >= 3.5.1 node flags): a retried step whose first attempt fails, with a
    `running` lifecycle hook and a task-level `onExit`, both children of the step's Retry node next
    to its attempts (`<step>.hooks.running`, `<step>.onExit`, GenerateOnExitNodeName /
    generateLifeHookNodeName); then the workflow's own exit handler `<wf>.onExit` (no parent)."""
    spec = {"entrypoint": "main", "onExit": "notify",
            "templates": [
                {"name": "main", "steps": [[{"name": "train", "template": "flaky", "onExit": "cleanup",
                                             "hooks": {"running": {"template": "notify"}}}]]},
                {"name": "flaky", "retryStrategy": {"limit": 1}, "container": {"image": "python:3.12"}},
                {"name": "cleanup", "container": {"image": "alpine:3.20"}},
                {"name": "notify", "container": {"image": "curlimages/curl:8.10"}}]}
    r = Run("hooked-steps-v7n2m", "6a8c0e2a-4c6e-4a8c-8e2a-4c6e8a0c2e4b", ns="argo", spec=spec)
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    g0 = f"{r.name}[0]"
    r.node(g0, "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    train = f"{g0}.train"
    r.node(train, "Retry", "flaky", 0, display="train", parent=g0, boundary=r.name)
    a0 = r.node(f"{train}(0)", "Pod", "flaky", 0, display="train(0)", parent=train, boundary=r.name)
    a0["nodeFlag"] = {"retried": True}
    r.snap()
    hook = r.node(f"{train}.hooks.running", "Pod", "notify", 1, display="train.hooks.running", parent=train,
                  boundary=r.name)
    hook["nodeFlag"] = {"hooked": True}
    r.snap()
    r.set(hook["name"], "Succeeded", 4, exit_code=0)
    r.set(a0["name"], "Failed", 9, message="main: Error (exit code 1)", exit_code=1)
    a1 = r.node(f"{train}(1)", "Pod", "flaky", 14, display="train(1)", parent=train, boundary=r.name)
    a1["nodeFlag"] = {"retried": True}
    r.snap()
    r.set(a1["name"], "Succeeded", 30, exit_code=0)
    r.set(train, "Succeeded", 30)
    ex = r.node(f"{train}.onExit", "Pod", "cleanup", 31, display="train.onExit", parent=train, boundary=r.name)
    ex["nodeFlag"] = {"hooked": True}
    r.snap()
    r.set(ex["name"], "Succeeded", 36, exit_code=0)
    r.set(g0, "Succeeded", 36)
    r.set(r.name, "Succeeded", 36)
    wx = r.node(f"{r.name}.onExit", "Pod", "notify", 37, phase="Running")
    wx["nodeFlag"] = {"hooked": True}
    r.snap()
    r.set(wx["name"], "Succeeded", 41, exit_code=0)
    r.workflow("Succeeded", 42)
    r.snap()
    return r.lines


def rec_http_and_suspend():
    """Plain Argo steps: an HTTP step that gets a 404 (the agent's message, Argo 3.2), an approval
    (Suspend node: Running while it waits, Succeeded when resumed), and a step after it."""
    spec = {"entrypoint": "main",
            "templates": [
                {"name": "main", "steps": [[{"name": "fetch", "template": "fetch", "continueOn": {"failed": True}}],
                                           [{"name": "approve", "template": "approve"}],
                                           [{"name": "deploy", "template": "deploy"}]]},
                {"name": "fetch", "http": {"url": "https://example.com/missing"}},
                {"name": "approve", "suspend": {}},
                {"name": "deploy", "container": {"image": "alpine:3.20"}}]}
    r = Run("approval-gate-p4x8z", "8c0e2a4c-6e8a-4c0e-8a4c-6e8a0c2e4a6d", ns="argo", spec=spec)
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    g0 = f"{r.name}[0]"
    r.node(g0, "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    fetch = r.node(f"{g0}.fetch", "HTTP", "fetch", 0, parent=g0, boundary=r.name, phase="Pending")
    r.snap()
    r.set(fetch["name"], "Failed", 2, message="404 Not Found")
    r.set(g0, "Succeeded", 2)
    g1 = f"{r.name}[1]"
    r.node(g1, "StepGroup", "main", 2, display="[1]", parent=fetch["name"], boundary=r.name)
    ap = r.node(f"{g1}.approve", "Suspend", "approve", 2, parent=g1, boundary=r.name, phase="Running")
    r.snap()
    r.set(ap["name"], "Succeeded", 600, message="Resumed by: {Username:alice}")
    r.set(g1, "Succeeded", 600)
    g2 = f"{r.name}[2]"
    r.node(g2, "StepGroup", "main", 600, display="[2]", parent=ap["name"], boundary=r.name)
    d = r.node(f"{g2}.deploy", "Pod", "deploy", 600, parent=g2, boundary=r.name)
    r.snap()
    r.set(d["name"], "Succeeded", 640, exit_code=0)
    r.set(g2, "Succeeded", 640)
    r.set(r.name, "Succeeded", 640)
    r.workflow("Succeeded", 641)
    r.snap()
    return r.lines


def rec_daemon_and_old_skip():
    """Argo 2.x shapes: a daemoned step (a database for the tests) still Running, `daemoned: true`,
    when the workflow is already Succeeded (Argo 2.x killed daemons after marking the workflow); and
    a skipped step created without a template (Argo < 2.4)."""
    spec = {"entrypoint": "main",
            "templates": [
                {"name": "main", "steps": [[{"name": "influx", "template": "influx"}],
                                           [{"name": "test", "template": "test"},
                                            {"name": "publish", "template": "test", "when": "false"}]]},
                {"name": "influx", "daemon": True, "container": {"image": "influxdb:1.2"}},
                {"name": "test", "container": {"image": "alpine:3.20"}}]}
    r = Run("daemon-tests-8k3rw", "0e2a4c6e-8a0c-4e2a-8c6e-8a0c2e4a6c8f", ns="argo", spec=spec,
            annotations={})
    r.workflow("Running", 0)
    r.node(r.name, "Steps", "main", 0)
    g0 = f"{r.name}[0]"
    r.node(g0, "StepGroup", "main", 0, display="[0]", parent=r.name, boundary=r.name)
    db = r.node(f"{g0}.influx", "Pod", "influx", 0, parent=g0, boundary=r.name, phase="Running")
    db["daemoned"] = True
    r.snap()
    r.set(g0, "Succeeded", 5)
    g1 = f"{r.name}[1]"
    r.node(g1, "StepGroup", "main", 5, display="[1]", parent=db["name"], boundary=r.name)
    t = r.node(f"{g1}.test", "Pod", "test", 5, parent=g1, boundary=r.name)
    sk = r.node(f"{g1}.publish", "Skipped", "", 5, parent=g1, boundary=r.name, phase="Skipped")
    del sk["templateName"]
    del sk["templateScope"]
    sk["message"] = "when 'false' evaluated false"
    sk["finishedAt"] = ts(5)
    r.snap()
    r.set(t["name"], "Succeeded", 20, exit_code=0)
    r.set(g1, "Succeeded", 20)
    r.set(r.name, "Succeeded", 20)
    r.workflow("Succeeded", 21)
    r.snap()
    return r.lines


# KFP v2 as the compiler and Argo make it (backend/src/v2/compiler/argocompiler/dag.go,
# container.go; Argo's dag.go): a task is `<task>-driver` (Pod, system-container-driver) then the
# executor DAG `<task>` (depends on the driver) holding the `executor` Pod; in a DAG a node's
# `children` are the nodes that depend on it; Argo writes no message on DAG nodes; the drivers'
# outputs are the parameters `backend/src/v2/cmd/driver/main.go` writes.

class V2:
    """A KFP v2 run advanced the way Argo's controller advances it: a task is its driver, then its
    executor DAG and pod; a DAG component (nested pipeline, condition, loop, exit handler) its DAG
    driver, then its DAG; a task that depends on another is a child of that one's executor pod
    (Argo wires dependents to their dependencies' outbound nodes, `dag.go`)."""

    def __init__(self, r):
        self.r = r
        self.root = f"{r.name}.root"

    def start(self, t):
        r = self.r
        r.workflow("Running", t)
        r.node(r.name, "DAG", "entrypoint", t)
        d = r.node(f"{r.name}.root-driver", "Pod", "system-dag-driver", t, parent=r.name, boundary=r.name)
        r.snap()
        r.set(d["name"], "Succeeded", t + 6, exit_code=0)
        d["outputs"]["parameters"] = _driver_outputs("ROOT_DAG")["parameters"]
        r.node(self.root, "DAG", "root", t + 7, parent=d["name"], boundary=r.name)
        r.snap()

    def driver(self, task, t, parent, boundary=None, phase="Running", display=None):
        return self.r.node(f"{boundary or self.root}.{task}-driver", "Pod", "system-container-driver", t,
                           display=display, parent=parent, boundary=boundary or self.root, phase=phase)

    def dag_driver(self, name, t, parent, boundary=None, condition="nil", iterations=0):
        """The DAG driver of a component (`system-dag-driver`), run to success."""
        r, b = self.r, boundary or self.root
        d = r.node(f"{b}.{name}-driver", "Pod", "system-dag-driver", t, parent=parent, boundary=b)
        r.snap()
        r.set(d["name"], "Succeeded", t + 5, exit_code=0)
        d["outputs"]["parameters"] = _driver_outputs("DAG", iterations=iterations, condition=condition)["parameters"]
        return d

    def group(self, name, template, t, parent, boundary=None):
        """The DAG node of a component: a nested pipeline, a condition, an exit handler."""
        return self.r.node(f"{boundary or self.root}.{name}", "DAG", template, t, parent=parent,
                           boundary=boundary or self.root)

    def not_taken(self, name, template, t, parent, boundary, condition):
        """A condition's DAG whose `when` on its driver's `condition` output is false: Argo skips
        it (`when '<c> != false' evaluated false`), nothing inside it runs."""
        n = self.r.node(f"{boundary}.{name}", "Skipped", template, t, parent=parent, boundary=boundary,
                        phase="Skipped")
        n["message"] = f"when '{condition} != false' evaluated false"
        n["finishedAt"] = ts(t)
        return n

    def task(self, task, t, parent, boundary=None, ok=True, message=None, end=None):
        """Driver, executor DAG and pod of one task, run to its end; returns the pod, the
        executor DAG's outbound node."""
        r, b = self.r, boundary or self.root
        d = self.driver(task, t, parent, boundary=b)
        r.snap()
        r.set(d["name"], "Succeeded", t + 5, exit_code=0)
        d["outputs"]["parameters"] = _driver_outputs()["parameters"]
        ex = r.node(f"{b}.{task}", "DAG", "system-container-executor", t + 6, parent=d["name"], boundary=b)
        pod = r.node(f"{b}.{task}.executor", "Pod", "system-container-impl", t + 6, parent=ex["name"],
                     boundary=ex["name"])
        r.snap()
        end = end or t + 20
        if ok:
            r.set(pod["name"], "Succeeded", end, exit_code=0)
            r.set(ex["name"], "Succeeded", end)
        else:
            r.set(pod["name"], "Failed", end, message=message, exit_code=1)
            r.set(ex["name"], "Failed", end)
        r.snap()
        return pod

    def omitted(self, name, t, parent, template, boundary=None):
        n = self.r.node(f"{boundary or self.root}.{name}", "Skipped", template, t, parent=parent,
                        boundary=boundary or self.root, phase="Omitted")
        n["message"] = "omitted: depends condition not met"
        n["finishedAt"] = ts(t)
        return n

    def end(self, phase, t, message=None):
        r = self.r
        r.set(self.root, phase, t)
        r.set(r.name, phase, t)
        r.workflow(phase, t, message=message)
        r.snap()
        r.meta["labels"]["pipeline/persistedFinalState"] = "true"
        r.snap()


def v2_components(r, components):
    """Writes the DAG components' specs as the compiler does (`components-<name>` parameters):
    {component: {task key: UI name or None}}; `root` is the pipeline's own DAG."""
    params = [p for p in r.spec["arguments"]["parameters"] if not p["name"].startswith("components-comp-")
              and p["name"] != "components-root"]
    for component, tasks in components.items():
        spec = {"dag": {"tasks": {key: {"componentRef": {"name": f"comp-{key}"},
                                        **({"taskInfo": {"name": name}} if name else {"taskInfo": {"name": key}})}
                                  for key, name in tasks.items()}}}
        name = "components-root" if component == "root" else f"components-{component}"
        params.append({"name": name, "value": json.dumps(spec)})
    r.spec["arguments"]["parameters"] = params
    for component in components:
        if component != "root" and not any(t["name"] == component for t in r.spec["templates"]):
            r.spec["templates"].append({"name": component, "dag": {"tasks": []}})


def rec_kfp_v2_driver_fails():
    """`consumer`'s driver fails (it resolves the inputs): Argo omits its executor DAG, whose
    `depends` on the driver is not met; the task failed. No message on the DAG nodes, none on the
    workflow."""
    r = v2_run("producer-consumer-n3v8c", "2a4c6e8a-0c2e-4a4c-8e8a-0c2e4a6c8e0b", "4c6e8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a2d",
               "producer-consumer", [("producer", []), ("consumer", ["producer"])], {"n": 3})
    v2 = V2(r)
    v2.start(0)
    producer = v2.task("producer", 8, v2.root)
    d = v2.driver("consumer", 30, producer["name"])
    r.snap()
    r.set(d["name"], "Failed", 36, message="main: Error (exit code 1)", exit_code=1)
    v2.omitted("consumer", 36, d["name"], "system-container-executor")
    v2.end("Failed", 37)
    return r.lines


def rec_kfp_v2_parallelfor():
    """`dsl.ParallelFor` over three items, as KFP >= 2.5 compiles it: the loop's DAG
    (`comp-for-loop-2-for-loop-2-iterator`) runs the iteration driver, which counts the items;
    Argo expands `iteration-iterations` (`withSequence`) into `(i:i)` DAG nodes under a TaskGroup;
    each runs an item driver and the loop body's DAG (`iteration-item`, the component
    `comp-for-loop-2`) with the task `print-op`; `after` the loop, `summary`."""
    r = v2_run("loop-pipeline-r2m9y", "4c6e8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a2f", "6e8a0c2e-4a6c-4e8a-8c2e-4a6c8e0a2c4a",
               "loop-pipeline", [("for-loop-2", []), ("summary", [])], {"items": [1, 2, 3]})
    v2_components(r, {"root": {"for-loop-2": None, "summary": None}, "comp-for-loop-2": {"print-op": None}})
    v2 = V2(r)
    v2.start(0)
    loop = r.node(f"{v2.root}.for-loop-2", "DAG", "comp-for-loop-2-for-loop-2-iterator", 8, parent=v2.root,
                  boundary=v2.root)
    ld = r.node(f"{loop['name']}.iteration-driver", "Pod", "system-dag-driver", 8, parent=loop["name"],
                boundary=loop["name"])
    r.snap()
    r.set(ld["name"], "Succeeded", 13, exit_code=0)
    ld["outputs"]["parameters"] = _driver_outputs("DAG", iterations=3)["parameters"]
    group = r.node(f"{loop['name']}.iteration-iterations", "TaskGroup", "comp-for-loop-2-iteration", 14,
                   parent=ld["name"], boundary=loop["name"])
    group["nodeFlag"] = {}
    bodies = []
    for i in range(3):
        it = r.node(f"{loop['name']}.iteration-iterations({i}:{i})", "DAG", "comp-for-loop-2-iteration", 14,
                    parent=group["name"], boundary=loop["name"])
        d = v2.dag_driver("iteration-item", 14, it["name"], boundary=it["name"])
        bodies.append(r.node(f"{it['name']}.iteration-item", "DAG", "comp-for-loop-2", 20, parent=d["name"],
                             boundary=it["name"]))
    r.snap()
    pods = [v2.task("print-op", 21 + i, body["name"], boundary=body["name"], end=40 + 3 * i)
            for i, body in enumerate(bodies)]
    for i, body in enumerate(bodies):
        r.set(body["name"], "Succeeded", 40 + 3 * i)
        r.set(f"{loop['name']}.iteration-iterations({i}:{i})", "Succeeded", 40 + 3 * i)
    r.set(group["name"], "Succeeded", 46)
    r.set(loop["name"], "Succeeded", 46)
    r.snap()
    summary = v2.task("summary", 48, pods[0]["name"])
    for pod in pods[1:]:
        pod.setdefault("children", []).append(r.nid(f"{v2.root}.summary-driver"))
    v2.end("Succeeded", 70)
    return r.lines


def rec_kfp_v2_pvc():
    """kfp-kubernetes `CreatePVC` / `DeletePVC`: driver-only tasks (the driver creates or deletes
    the claim, no executor); `producer` between them."""
    r = v2_run("with-volume-j5p2u", "6e8a0c2e-4a6c-4e8a-8c2e-4a6c8e0a2c4b", "8a0c2e4a-6c8e-4a0c-8e4a-6c8e0a2c4e6b",
               "with-volume", [("producer", [])], {"size": "5Gi"})
    v2 = V2(r)
    v2.start(0)
    c = r.node(f"{v2.root}.createpvc", "Pod", "system-container-driver", 8, parent=v2.root, boundary=v2.root)
    r.snap()
    r.set(c["name"], "Succeeded", 17, exit_code=0)
    producer = v2.task("producer", 18, c["name"])
    dl = r.node(f"{v2.root}.deletepvc", "Pod", "system-container-driver", 39, parent=producer["name"],
                boundary=v2.root)
    r.snap()
    r.set(dl["name"], "Succeeded", 47, exit_code=0)
    v2.end("Succeeded", 48)
    return r.lines


def rec_kfp_v2_display_names():
    """Tasks renamed for KFP's UI (`.set_display_name('Producer')`): the compiler writes the name
    as the task's `taskInfo.name` in `components-root`; the task key stays `producer`."""
    r = v2_run("display-names-h6t2q", "8a0c2e4a-6c8e-4a0c-8e4a-6c8e0a2c4e6c", "0c2e4a6c-8e0a-4c2e-8a6c-8e0a2c4e6a8d",
               "display-names", [("producer", []), ("consumer", ["producer"])], {"text": "hi"})
    for p in r.spec["arguments"]["parameters"]:
        if p["name"] == "components-root":
            root = json.loads(p["value"])
            root["dag"]["tasks"]["producer"]["taskInfo"] = {"name": "Producer"}
            root["dag"]["tasks"]["consumer"]["taskInfo"] = {"name": "Consumer"}
            p["value"] = json.dumps(root)
    v2 = V2(r)
    v2.start(0)
    producer = v2.task("producer", 8, v2.root)
    v2.task("consumer", 30, producer["name"])
    v2.end("Succeeded", 52)
    return r.lines


def rec_kfp_v2_nested_pipeline():
    """A pipeline used twice as a component of another (`inner-pipeline`, `inner-pipeline-2`),
    each with the tasks `print-op1` (shown as `Inner print`) and `print-op2`, beside the outer
    pipeline's own `print-op1`: three tasks with the key `print-op1`. In `inner-pipeline-2`,
    `print-op1` fails and `print-op2` is omitted."""
    r = v2_run("pipeline-in-pipeline-w4k8d", "0c2e4a6c-8e0a-4c2e-8a6c-8e0a2c4e6a8e", "2e4a6c8e-0a2c-4e4a-8c8e-0a2c4e6a8c0f",
               "pipeline-in-pipeline", [("print-op1", []), ("inner-pipeline", []), ("inner-pipeline-2", [])],
               {"msg": "hello"})
    v2_components(r, {"root": {"print-op1": None, "inner-pipeline": None, "inner-pipeline-2": None},
                      "comp-inner-pipeline": {"print-op1": "Inner print", "print-op2": None}})
    v2 = V2(r)
    v2.start(0)
    v2.task("print-op1", 8, v2.root, end=20)
    inners = []
    for name, t in (("inner-pipeline", 8), ("inner-pipeline-2", 9)):
        d = v2.dag_driver(name, t, v2.root)
        inners.append(v2.group(name, "comp-inner-pipeline", t + 6, d["name"]))
    r.snap()
    first = v2.task("print-op1", 16, inners[0]["name"], boundary=inners[0]["name"], end=30)
    v2.task("print-op2", 31, first["name"], boundary=inners[0]["name"], end=45)
    r.set(inners[0]["name"], "Succeeded", 45)
    failed = v2.task("print-op1", 17, inners[1]["name"], boundary=inners[1]["name"], ok=False,
                     message="main: Error (exit code 1)", end=33)
    # `print-op2` depends on `print-op1` succeeding: Argo omits its driver and executor DAG.
    od = v2.omitted("print-op2-driver", 33, failed["name"], "system-container-driver", boundary=inners[1]["name"])
    v2.omitted("print-op2", 33, od["name"], "system-container-executor", boundary=inners[1]["name"])
    r.set(inners[1]["name"], "Failed", 33)
    v2.end("Failed", 46)
    return r.lines


def rec_kfp_v2_if_elif_else():
    """`dsl.If / Elif / Else` on a die roll: the compiler makes a `condition-branches-1` DAG with
    one DAG per branch, each behind a DAG driver that evaluates its condition (`condition`
    output); Argo skips the branches not taken (`when` false), and runs the task of the one
    taken (`condition-3`: `print-and-return-2`); then `report` at the top level."""
    r = v2_run("roll-die-q2v5m", "2e4a6c8e-0a2c-4e4a-8c8e-0a2c4e6a8c0a", "4a6c8e0a-2c4e-4a6c-8e0a-2c4e6a8c0e2b",
               "roll-die", [("flip-three-sided-die", []), ("condition-branches-1", []), ("report", [])], {})
    v2_components(r, {"root": {"flip-three-sided-die": None, "condition-branches-1": None, "report": None},
                      "comp-condition-branches-1": {"condition-2": None, "condition-3": None, "condition-4": None},
                      "comp-condition-2": {"print-and-return": None},
                      "comp-condition-3": {"print-and-return-2": None},
                      "comp-condition-4": {"print-and-return-3": None}})
    v2 = V2(r)
    v2.start(0)
    die = v2.task("flip-three-sided-die", 8, v2.root)
    d = v2.dag_driver("condition-branches-1", 29, die["name"])
    branches = v2.group("condition-branches-1", "comp-condition-branches-1", 35, d["name"])
    r.snap()
    taken = None
    for i, outcome in ((2, "false"), (3, "true"), (4, "false")):
        d = v2.dag_driver(f"condition-{i}", 36, branches["name"], boundary=branches["name"], condition=outcome)
        if outcome == "true":
            taken = v2.group(f"condition-{i}", f"comp-condition-{i}", 42, d["name"], boundary=branches["name"])
        else:
            v2.not_taken(f"condition-{i}", f"comp-condition-{i}", 42, d["name"], branches["name"], outcome)
    r.snap()
    pod = v2.task("print-and-return-2", 43, taken["name"], boundary=taken["name"], end=60)
    r.set(taken["name"], "Succeeded", 60)
    r.set(branches["name"], "Succeeded", 60)
    r.snap()
    v2.task("report", 61, pod["name"], end=80)
    v2.end("Succeeded", 81)
    return r.lines


def rec_kfp_v2_exit_handler():
    """`dsl.ExitHandler(cleanup)` around `train` and `publish`: the compiler makes an
    `exit-handler-1` DAG whose Argo exit hook (`exit-hook-root-cleanup`, node
    `exit-handler-1.onExit`, `nodeFlag.hooked`) runs `cleanup` after it; `train` fails."""
    r = v2_run("with-exit-handler-p7x3n", "4a6c8e0a-2c4e-4a6c-8e0a-2c4e6a8c0e2c", "6c8e0a2c-4e6a-4c8e-8a2c-4e6a8c0e2a4d",
               "with-exit-handler", [("exit-handler-1", [])], {"url": "gs://example/data"})
    v2_components(r, {"root": {"exit-handler-1": None, "cleanup": None},
                      "comp-exit-handler-1": {"train": None, "publish": None}})
    r.spec["templates"].append({"name": "exit-hook-root-cleanup", "dag": {"tasks": []}})
    v2 = V2(r)
    v2.start(0)
    d = v2.dag_driver("exit-handler-1", 8, v2.root)
    eh = v2.group("exit-handler-1", "comp-exit-handler-1", 14, d["name"])
    r.snap()
    v2.task("train", 15, eh["name"], boundary=eh["name"], ok=False, message="main: Error (exit code 1)", end=40)
    v2.task("publish", 15, eh["name"], boundary=eh["name"], end=30)
    r.set(eh["name"], "Failed", 40)
    hook = r.node(f"{eh['name']}.onExit", "DAG", "exit-hook-root-cleanup", 41, display="exit-handler-1.onExit",
                  parent=eh["name"], boundary=v2.root)
    hook["nodeFlag"] = {"hooked": True}
    r.snap()
    v2.task("cleanup", 41, hook["name"], boundary=hook["name"], end=60)
    r.set(hook["name"], "Succeeded", 60)
    v2.end("Failed", 61)
    return r.lines


def rec_kfp_v2_importer():
    """`dsl.importer` of an existing artifact (the importer runs in a launcher pod of its own,
    `system-importer`, no driver) feeding `train`; a `dsl.If` on train's metric not taken."""
    r = v2_run("with-importer-f8c2k", "6c8e0a2c-4e6a-4c8e-8a2c-4e6a8c0e2a4e", "8e0a2c4e-6a8c-4e0a-8c4e-6a8c0e2a4c6f",
               "with-importer", [("importer", []), ("train", ["importer"]), ("condition-1", ["train"])], {})
    v2_components(r, {"root": {"importer": None, "train": None, "condition-1": None},
                      "comp-condition-1": {"deploy": None}})
    r.spec["templates"].append({"name": "system-importer", "container": {"command": ["launcher-v2"],
                                "args": ["--executor_type", "importer", "--pipeline_name", "with-importer"],
                                "image": "ghcr.io/kubeflow/kfp-launcher:2.15.0"}})
    v2 = V2(r)
    v2.start(0)
    imp = r.node(f"{v2.root}.importer", "Pod", "system-importer", 8, parent=v2.root, boundary=v2.root)
    r.snap()
    r.set(imp["name"], "Succeeded", 17, exit_code=0)
    train = v2.task("train", 18, imp["name"], end=40)
    d = v2.dag_driver("condition-1", 41, train["name"])
    v2.not_taken("condition-1", "comp-condition-1", 47, d["name"], v2.root, "false")
    v2.end("Succeeded", 48)
    return r.lines


RECORDINGS = {
    "kfp-v2-success.jsonl": rec_v2_success,
    "kfp-v2-retries-failed.jsonl": rec_v2_retries_fail,
    "kfp-v2-imagepull-terminated.jsonl": rec_v2_imagepull_terminate,
    "kfp-v2-unschedulable-then-scheduled.jsonl": rec_v2_unschedulable,
    "kfp-v2-oomkilled.jsonl": rec_v2_oomkilled,
    "kfp-v2-compressed-nodes.jsonl": rec_v2_compressed,
    "kfp-v2-recurring-run.jsonl": rec_recurring,
    "kfp-v1-success.jsonl": rec_v1,
    "argo-steps-retry-skip.jsonl": rec_argo_steps,
    "offloaded-and-deleted-workflows.jsonl": rec_offloaded_and_gone,
    "retries/kfp-v1.jsonl": rec_kfp_v1_retry,
    "retries/kfp-v2.jsonl": rec_kfp_v2_retry,
    "retries/kfp-v2-terminated.jsonl": rec_kfp_v2_terminated_retry,
    "retries/argo-dag.jsonl": rec_argo_dag_retry,
    "retries/argo-steps-twice.jsonl": rec_argo_steps_retry,
    "retries/argo-restart-successful.jsonl": rec_argo_restart_successful,
    "fidelity/quota-pending.jsonl": rec_quota_pending,
    "fidelity/templates-null.jsonl": rec_templates_null,
    "fidelity/odd-field-types.jsonl": rec_odd_field_types,
    "fidelity/hooks-and-exit-handlers.jsonl": rec_hooks_and_exit_handlers,
    "fidelity/http-and-suspend.jsonl": rec_http_and_suspend,
    "fidelity/daemon-and-old-skip.jsonl": rec_daemon_and_old_skip,
    "fidelity/kfp-v2-driver-fails.jsonl": rec_kfp_v2_driver_fails,
    "fidelity/kfp-v2-parallelfor.jsonl": rec_kfp_v2_parallelfor,
    "fidelity/kfp-v2-pvc.jsonl": rec_kfp_v2_pvc,
    "fidelity/kfp-v2-display-names.jsonl": rec_kfp_v2_display_names,
    "fidelity/kfp-v2-nested-pipeline.jsonl": rec_kfp_v2_nested_pipeline,
    "fidelity/kfp-v2-if-elif-else.jsonl": rec_kfp_v2_if_elif_else,
    "fidelity/kfp-v2-exit-handler.jsonl": rec_kfp_v2_exit_handler,
    "fidelity/kfp-v2-importer.jsonl": rec_kfp_v2_importer,
}


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "examples" / "recordings")
    out.mkdir(parents=True, exist_ok=True)
    for name, make in RECORDINGS.items():
        lines = make()
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        with open(out / name, "w") as f:
            for line in lines:
                f.write(json.dumps(line, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{name}: {len(lines)} lines")


if __name__ == "__main__":
    main()
