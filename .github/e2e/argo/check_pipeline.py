"""Wait for a submitted pipeline on the Argo server and check what the Argo UI shows of it.

    python .github/e2e/argo/check_pipeline.py --server https://127.0.0.1:2746 --namespace argo \
        --name train-iris-classifier-abcde --model iris-classifier --env e2e --commit SHA

Finds the workflow the way the Argo UI's workflow list filters (the server's list API with a label
selector on gitops.ml/model), waits for it to finish, and checks its labels and annotations (model,
content hash, environment, commit, pipeline; title and description) and its pods' labels (podMetadata:
cost attribution per model and environment). Exit 0 when it Succeeded and everything is there.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

MODEL, HASH, ENV, COMMIT, PIPELINE = ("gitops.ml/model", "gitops.ml/model-hash", "gitops.ml/environment",
                                      "gitops.ml/git-commit", "gitops.ml/pipeline")
TITLE, DESCRIPTION = "workflows.argoproj.io/title", "workflows.argoproj.io/description"


def selector(model: str, pipeline: str) -> str:
    return f"{MODEL}={model},{PIPELINE}={pipeline}"


def workflow_problems(workflow: dict, *, model: str, environment: str, commit: str, pipeline: str) -> list[str]:
    """What is missing or wrong in a Workflow's metadata for the Argo UI's filters and list ([] if nothing). Pure."""
    meta = workflow.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    problems = []
    want = {MODEL: model, ENV: environment, COMMIT: commit, PIPELINE: pipeline}
    for key, value in want.items():
        if labels.get(key) != value:
            problems.append(f"label {key} is {labels.get(key)!r}, expected {value!r}")
    if not labels.get(HASH):
        problems.append(f"no {HASH} label")
    elif not (annotations.get(HASH) or "").startswith(labels[HASH]):
        problems.append(f"the {HASH} label {labels[HASH]!r} is not a prefix of the annotation {annotations.get(HASH)!r}")
    for key in (TITLE, DESCRIPTION):
        if not annotations.get(key):
            problems.append(f"no {key} annotation (the Argo UI's list shows it)")
    pod_labels = ((workflow.get("spec") or {}).get("podMetadata") or {}).get("labels") or {}
    for key, value in ((MODEL, model), (ENV, environment)):
        if pod_labels.get(key) != value:
            problems.append(f"spec.podMetadata label {key} is {pod_labels.get(key)!r}, expected {value!r}")
    return problems


def pod_problems(pods: list[dict], *, model: str, environment: str) -> list[str]:
    """Every step pod carries the model and environment labels (cost attribution). Pure."""
    if not pods:
        return ["no step pod was seen"]
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(MODEL) != model or labels.get(ENV) != environment:
            out.append(f"pod {pod['metadata']['name']} labels {labels}")
    return out


def _get(server: str, path: str, params: dict[str, str]) -> dict:
    context = ssl._create_unverified_context()  # the quick start's self-signed certificate
    url = f"{server}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30, context=context) as response:
        return json.loads(response.read())


def _pods(namespace: str, name: str) -> list[dict]:
    proc = subprocess.run(["kubectl", "-n", namespace, "get", "pods", "-l", f"workflows.argoproj.io/workflow={name}",
                           "-o", "json"], capture_output=True, text=True)
    return json.loads(proc.stdout).get("items", []) if proc.returncode == 0 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--namespace", default="argo")
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--pipeline", default="train")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)

    deadline, pods, workflow = time.monotonic() + args.timeout, {}, None
    while time.monotonic() < deadline:
        listed = _get(args.server, f"/api/v1/workflows/{args.namespace}",
                      {"listOptions.labelSelector": selector(args.model, args.pipeline)})
        found = [w for w in listed.get("items") or [] if w["metadata"]["name"] == args.name]
        if not found:
            print(f"{args.name} is not in the list filtered by {selector(args.model, args.pipeline)}", flush=True)
            return 1
        workflow = found[0]
        for pod in _pods(args.namespace, args.name):  # podGC removes succeeded pods: look while it runs
            pods[pod["metadata"]["name"]] = pod
        phase = (workflow.get("status") or {}).get("phase")
        print(f"{args.name}: {phase or 'pending'} ({len(pods)} step pods seen)", flush=True)
        if phase in ("Succeeded", "Failed", "Error"):
            break
        time.sleep(10)
    else:
        print(f"timed out after {args.timeout:.0f}s", flush=True)
        return 1
    status = workflow.get("status") or {}
    problems = workflow_problems(workflow, model=args.model, environment=args.env, commit=args.commit,
                                 pipeline=args.pipeline)
    problems += pod_problems(list(pods.values()), model=args.model, environment=args.env)
    if status.get("phase") != "Succeeded":
        problems.append(f"the workflow ended {status.get('phase')}: {status.get('message')}")
        for node in (status.get("nodes") or {}).values():
            if node.get("phase") in ("Failed", "Error"):
                problems.append(f"  step {node.get('displayName')}: {node.get('message')}")
    for line in problems:
        print(f"problem: {line}", flush=True)
    print(json.dumps({"name": args.name, "phase": status.get("phase"),
                      "outputs": (status.get("outputs") or {}).get("parameters")}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
