"""environment.yaml `monitoring` and the metrics that request autoscalers and canary analysis read.

KEDA's Prometheus trigger and the canary's queries select the models' bentoml_service_* series by the gitops_ml_model,
track and pool labels that a scrape copies from the pods. With nothing scraping them, KEDA reads an empty query as 0
(a GPU model never scales out) and the canary has no data, silently. The template's staging and prod, which render
both, scrape them (`monitoring: pod-monitor`); an environment that says `none` while its models need them gets a
plan warning naming the file, the field and the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import git

from reconciler.catalog.load import load_catalog
from reconciler.render.autoscaling import prometheus_label
from reconciler.render.environment import render_environment
from reconciler import labels as L
from tests.conftest import TEMPLATE_MODELS, commit_all

IMAGES = {m: f"r.example/{m}:t" for m in TEMPLATE_MODELS} | {f"{m}/{k}": f"r.example/{m}:t-{k}" for m in TEMPLATE_MODELS
                                                            for k in ("gpu", "inferentia")}
STAGING = "environments/staging/environment.yaml"


def _plan(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "BENTOML_HOME": str(repo.parent / "bentoml"), "NO_COLOR": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "reconciler"), "plan", "--no-check-artifacts",
                           "--format", "json", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    return done, json.loads(done.stdout[done.stdout.index("{"):]) if "{" in done.stdout else {}


def _monitoring(root: Path, env: str, mode: str) -> None:
    path = root / "environments" / env / "environment.yaml"
    path.write_text(re.sub(r"(?m)^monitoring: .*$", f"monitoring: {mode}", path.read_text()))


def _warning(plan: dict, env: str) -> str | None:
    return next((w for w in plan["warnings"] if w.startswith(f"environments/{env}/environment.yaml")), None)


def test_the_templates_request_autoscalers_and_canaries_read_series_its_podmonitors_scrape(template_repo: Path):
    catalog = load_catalog(template_repo)
    copied = {prometheus_label(k) for k in (L.MODEL, L.TRACK, L.POOL)}
    seen = 0
    for env in ("staging", "prod"):
        result = render_environment(catalog, env, images=IMAGES)
        assert result.errors == {}
        for name, model in result.models.items():
            monitors = [o for o in model.objects if o["kind"] == "PodMonitor"]
            assert len(monitors) == 1, (env, name)
            assert {prometheus_label(k) for k in monitors[0]["spec"]["podTargetLabels"]} == copied
            for scaled in (o for o in model.objects if o["kind"] == "ScaledObject"):
                for trigger in (t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"):
                    assert all(f"{label}=" in trigger["metadata"]["query"] for label in copied), trigger
                    seen += 1
    assert seen >= 2  # iris on gpu in staging and prod: its in-flight trigger


def test_monitoring_none_with_request_autoscalers_or_canaries_is_a_plan_warning(template_repo: Path):
    repo = git.Repo(template_repo)
    first, plan = _plan(template_repo, "--base", "empty")
    assert first.returncode == 0, first.stderr
    assert not [w for w in plan["warnings"] if "field 'monitoring'" in w]  # the template scrapes what it reads

    _monitoring(template_repo, "staging", "none")
    commit_all(repo, "staging: no monitoring")
    done, plan = _plan(template_repo, "--base", "HEAD~1")
    assert done.returncode == 0, done.stderr  # a warning, not an error: what is serving is not blocked
    warning = _warning(plan, "staging")
    assert warning is not None, plan["warnings"]
    assert "(field 'monitoring')" in warning and "monitoring is none in environment 'staging'" in warning
    assert "iris-classifier (a request autoscaler (concurrency) and canary analysis)" in warning  # gpu: in-flight
    assert "never scales out" in warning and "fix: set monitoring: pod-monitor" in warning
    assert "monitoring: external" in warning
    assert f"warning: {STAGING} (field 'monitoring')" in done.stderr  # where a person running it reads it
    assert _warning(plan, "prod") is None and _warning(plan, "dev") is None

    _monitoring(template_repo, "staging", "external")  # the cluster's own scrape config copies the labels
    commit_all(repo, "staging: scraped by our own config")
    done, plan = _plan(template_repo, "--base", "HEAD~1")
    assert done.returncode == 0 and _warning(plan, "staging") is None, plan["warnings"]


def test_with_monitoring_none_a_model_change_warns_only_for_models_that_read_the_metrics(template_repo: Path):
    repo = git.Repo(template_repo)
    path = template_repo / STAGING
    path.write_text(path.read_text().replace("canary: true", "canary: false"))
    _monitoring(template_repo, "staging", "none")
    commit_all(repo, "staging: no canaries, no monitoring")
    wine = template_repo / "models" / "wine-classifier" / "model.yaml"  # cpu, a fixed replica count
    wine.write_text(wine.read_text().replace("replicas: 1", "replicas: 2"))
    commit_all(repo, "wine: 2 replicas")
    done, plan = _plan(template_repo, "--base", "HEAD~1")
    assert done.returncode == 0, done.stderr
    assert plan["environments"]["staging"]["changedModels"] == ["wine-classifier"]
    assert _warning(plan, "staging") is None, plan["warnings"]  # nothing of it reads scraped metrics
    iris = template_repo / "models" / "iris-classifier" / "model.yaml"  # on gpu in staging: an in-flight autoscaler
    iris.write_text(iris.read_text().replace("maxReplicas: 4", "maxReplicas: 5"))
    commit_all(repo, "iris: up to 5")
    done, plan = _plan(template_repo, "--base", "HEAD~1")
    warning = _warning(plan, "staging")
    assert warning is not None and "iris-classifier (a request autoscaler (concurrency))" in warning, plan["warnings"]
    assert "wine-classifier" not in warning and "canary analysis)" not in warning  # canaries are off here


def test_a_sync_of_an_environment_nothing_scrapes_says_so(envtest_repo, envtest):
    """The operator running `reconciler sync` (or the `run` loop's record) reads it too, not only a PR's plan."""
    root = envtest_repo.root
    _monitoring(root, "staging", "none")
    commit_all(git.Repo(root), "staging: no monitoring")
    env = {**os.environ, "RECONCILER_IMAGES_FILE": str(root.parent / "images.json"), "NO_COLOR": "1"}
    env.pop("RECONCILER_PROMETHEUS_URL", None)
    command = [str(Path(sys.executable).parent / "reconciler"), "sync", "staging", "--repo", str(root), "--dry-run",
               "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest"]
    done = subprocess.run([*command, "--format", "json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    notes = json.loads(done.stdout[done.stdout.index("{"):])["notes"]
    (warning,) = [n for n in notes if "(field 'monitoring')" in n]
    assert warning.startswith(f"warning: {STAGING} (field 'monitoring'): monitoring is none in environment 'staging'")
    assert "iris-classifier (a request autoscaler (concurrency) and canary analysis)" in warning
    assert "fix: set monitoring: pod-monitor" in warning
    text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert text.returncode == 0 and "note: warning: environments/staging/environment.yaml (field 'monitoring')" in \
        " ".join(text.stdout.split()), text.stdout
    _monitoring(root, "staging", "pod-monitor")
    commit_all(git.Repo(root), "staging: PodMonitors")
    done = subprocess.run([*command, "--format", "json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and not [n for n in json.loads(done.stdout[done.stdout.index("{"):])["notes"]
                                         if "'monitoring'" in n], done.stdout
