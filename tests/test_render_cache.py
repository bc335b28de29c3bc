"""The render cache keeps failures as well as renders, and is pruned by age and size, least recently used first."""

from __future__ import annotations

import os
import time

import git
import pytest

from reconciler.errors import LimitError, RenderError
from reconciler.plan.revisions import plan_revisions
from reconciler.render.cache import CachedRenderError, RenderCache
from tests.conftest import commit_all

DAY = 86400


def _entries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def _age(cache, key, days, now, suffix=".json"):
    path = cache._path(key, suffix)
    os.utime(path, (now - days * DAY, now - days * DAY))


def test_a_failure_is_kept_with_its_text_and_read_back_as_it_printed(tmp_path):
    cache = RenderCache(tmp_path / "c")
    cache.put_error("ab" * 32, "model 'x' in prod: kustomize failed: no\n  fix: check the overlay")
    found = cache.error("ab" * 32)
    assert isinstance(found, CachedRenderError)
    assert str(found) == "model 'x' in prod: kustomize failed: no\n  fix: check the overlay"
    assert cache.get("ab" * 32) is None and not cache.has("ab" * 32)  # a failure is not a render
    assert RenderCache(None).error("ab" * 32) is None


def test_prune_drops_entries_unused_for_the_age_bound(tmp_path):
    cache = RenderCache(tmp_path / "c")
    now = time.time()
    for i, days in enumerate([40, 31, 29, 1]):
        cache.put(f"{i:02d}" + "0" * 62, [{"kind": "ConfigMap", "n": i}])
        _age(cache, f"{i:02d}" + "0" * 62, days, now)
    removed, _ = cache.prune(max_bytes=10**9, max_age_days=30, now=now)
    assert removed == 2
    assert cache.get("00" + "0" * 62) is None and cache.get("01" + "0" * 62) is None
    assert cache.get("02" + "0" * 62) == [{"kind": "ConfigMap", "n": 2}]


def test_prune_keeps_the_folder_under_its_size_least_recently_used_first(tmp_path):
    cache = RenderCache(tmp_path / "c")
    now = time.time()
    keys = [f"{i:02d}" + "f" * 62 for i in range(6)]
    for i, key in enumerate(keys):
        cache.put(key, [{"kind": "ConfigMap", "data": "x" * 1000}])
        _age(cache, key, 6 - i, now)  # keys[0] is the oldest
    assert cache.get(keys[0]) is not None  # a hit: now the most recently used
    size = cache._path(keys[0]).stat().st_size
    removed, left = cache.prune(max_bytes=3 * size, max_age_days=30)
    assert removed == 3 and left <= 3 * size
    assert [cache.has(k) for k in keys] == [True, False, False, False, True, True]


def test_prune_removes_abandoned_temporary_files_only(tmp_path):
    cache = RenderCache(tmp_path / "c")
    cache.put("aa" * 32, [])
    old, fresh = tmp_path / "c" / "aa" / ".tmp-old", tmp_path / "c" / "aa" / ".tmp-fresh"
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache.prune(max_bytes=10**9, max_age_days=30)
    assert not old.exists() and fresh.exists() and cache.has("aa" * 32)


def test_prune_bounds_come_from_the_environment(tmp_path, monkeypatch):
    cache = RenderCache(tmp_path / "c")
    cache.put("bb" * 32, [{"kind": "ConfigMap"}])
    monkeypatch.setenv("RECONCILER_RENDER_CACHE_MAX_BYTES", "1")
    assert cache.prune() == (1, 0)
    monkeypatch.setenv("RECONCILER_RENDER_CACHE_MAX_AGE_DAYS", "soon")
    with pytest.raises(LimitError, match="RECONCILER_RENDER_CACHE_MAX_AGE_DAYS"):
        cache.prune()


def test_a_plan_prunes_the_cache_it_wrote(template_repo, tmp_path, monkeypatch):
    repo = git.Repo(template_repo)
    (template_repo / "models/iris-classifier/service.py").write_text(
        (template_repo / "models/iris-classifier/service.py").read_text() + "\n# tuned\n")
    commit_all(repo, "iris code")
    kept = RenderCache(tmp_path / "kept")
    plan_revisions(template_repo, "HEAD~1", "HEAD", cache=kept, check_artifacts=False)
    assert kept.writes > 0 and any(n.endswith(".json") for n in _entries(tmp_path / "kept"))
    monkeypatch.setenv("RECONCILER_RENDER_CACHE_MAX_BYTES", "1")
    small = RenderCache(tmp_path / "small")
    plan_revisions(template_repo, "HEAD~1", "HEAD", cache=small, check_artifacts=False)
    assert small.writes > 0 and _entries(tmp_path / "small") == [".pruned"]
    # pruned at most every PRUNE_EVERY seconds: a second plan right after leaves what it wrote
    plan_revisions(template_repo, "HEAD~1", "HEAD", cache=small, check_artifacts=False)
    assert len(_entries(tmp_path / "small")) > 1


def test_a_render_error_names_no_temporary_folder(tmp_path):
    from reconciler.render.environment import stable_paths
    from reconciler.render.kustomize import KustomizeTimeout

    work, repo = tmp_path / "render-prod-x1", tmp_path / "rev-abc"
    exc = RenderError(f"model 'm' in prod: kustomize failed: lstat {work}/chunk-0/objects.yaml; "
                      f"{repo}/environments/prod/patch.yaml: no such file", fix="check the overlay")
    stable = stable_paths(exc, {str(work): "<render>", str(repo): "<repo>"})
    assert str(stable) == ("model 'm' in prod: kustomize failed: lstat <render>/chunk-0/objects.yaml; "
                           "<repo>/environments/prod/patch.yaml: no such file\n  fix: check the overlay")
    timeout = stable_paths(KustomizeTimeout(f"slow in {work}"), {str(work): "<render>"})
    assert isinstance(timeout, KustomizeTimeout) and timeout.message == "slow in <render>"
    assert stable_paths(exc, {"/elsewhere": "<x>"}) is exc


def test_an_outcome_set_is_read_back_as_written_grouped_by_outcome(tmp_path):
    cache = RenderCache(tmp_path / "c")
    clean = {"dev": None, "prod": None, "staging": None}
    models = {f"model-{i:04d}": dict(clean) for i in range(500)}
    models["broken"] = {"dev": "models/broken/model.yaml: owner: Field required", "prod": None, "staging": None}
    models["dev-only"] = {"dev": None}
    key = "ab" * 32
    cache.put_outcome_set(key, models)
    assert cache.outcome_set(key) == models
    written = next((tmp_path / "c" / "outcome-sets").rglob("*.json")).read_text()
    assert written.count('"staging"') == 2  # one object per distinct outcome, not per model
    assert cache.outcome_set("cd" * 32) is None  # never written
    assert RenderCache(None).outcome_set(key) is None
    # a set written by the per-model format before, or a damaged one, is not recorded: the plan reads the models
    path = next((tmp_path / "c" / "outcome-sets").rglob("*.json"))
    for damaged in ('{"format": "render-cache/v1", "models": {"a": {"dev": null}}}',
                    '{"format": "render-cache/v1", "groups": [[{"dev": null}]]}', "not json"):
        path.write_text(damaged)
        assert cache.outcome_set(key) is None
