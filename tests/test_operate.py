"""Operator decisions without a server: rollback pin and on-demand requests in the loop's next_step,
the field diff, history bookkeeping, notifications' payloads, status formatting, dry-run summaries."""

from __future__ import annotations

import pytest

from reconciler.errors import ReconcilerError
from reconciler.results import Action, Summary
from reconciler.run import history
from reconciler.run.loop import next_step
from reconciler.run.record import REQUEST_ANNOTATION, Record, sync_policy
from reconciler.run.notify import commit_status, message
from reconciler.run.status import EnvironmentStatus, ModelStatus, ResourceStatus, to_markdown, to_text
from reconciler.source.git import redact_url
from reconciler.sync.planner import SyncOptions
from reconciler.sync.server_diff import field_changes, normalize


class Linear:
    """A first-parent history a -> b -> c -> d."""

    order = ["a", "b", "c", "d"]

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.order.index(ancestor) <= self.order.index(descendant)

    def between(self, base: str, head: str) -> list[str]:
        return self.order[self.order.index(base) + 1: self.order.index(head) + 1]


def test_a_rollback_holds_until_a_newer_commit_arrives():
    pinned = Record("a", True, pinned_head="c")
    assert next_step(pinned, "c", Linear()) is None  # the head it was rolled back from: stay
    assert next_step(pinned, "b", Linear()) is None  # an older head (a revert of the branch): stay too
    step = next_step(pinned, "d", Linear())
    assert step is not None and step.commit == "d" and "newest commit of the branch" in step.reason
    failed = Record("a", False, pinned_head="c")
    retry = next_step(failed, "c", Linear())
    assert retry is not None and retry.commit == "a" and "rolled back to a" in retry.reason
    asked = Record("a", True, pinned_head="c", requested="t1", handled="t0")
    again = next_step(asked, "c", Linear())
    assert again is not None and again.commit == "a"


def test_an_on_demand_request_reconciles_once():
    requested = Record("d", True, requested="2026-12-01T22:00:00Z", handled="")
    step = next_step(requested, "d", Linear())
    assert step is not None and step.commit == "d" and "on-demand" in step.reason
    handled = Record("d", True, requested="2026-12-01T22:00:00Z", handled="2026-12-01T22:00:00Z")
    assert next_step(handled, "d", Linear()) is None


def test_record_reads_the_request_annotation_and_the_pin():
    cm = {"metadata": {"annotations": {REQUEST_ANNOTATION: "t2"}},
          "data": {"commit": "a", "ok": "true", "pinnedHead": "c", "handledRequest": "t1"}}
    record = Record.of(cm)
    assert record is not None
    assert (record.pinned_head, record.requested, record.handled, record.on_demand) == ("c", "t2", "t1", True)


def test_field_changes_match_named_lists_and_ignore_server_bookkeeping():
    live = {"metadata": {"name": "x", "resourceVersion": "7", "managedFields": [{}], "generation": 3,
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "s:1"}, {"name": "model", "image": "m:1",
                                                     "resources": {"limits": {"cpu": "1"}}}]}}},
            "status": {"readyReplicas": 1}}
    desired = {"metadata": {"name": "x", "resourceVersion": "8", "generation": 4},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [
                   {"name": "model", "image": "m:2", "resources": {"limits": {"cpu": "1"}}},
                   {"name": "sidecar", "image": "s:1"}]}}}}
    changes = field_changes(normalize(live), normalize(desired))
    assert [str(c) for c in changes] == ["spec.replicas: 3 -> 1",
                                         'spec.template.spec.containers[model].image: "m:1" -> "m:2"']
    assert field_changes(normalize(live), normalize(live)) == []


def test_history_counts_up_and_keeps_the_newest():
    entries: list[history.Revision] = []
    for i in range(5):
        entries = history.appended(entries, commit=f"c{i}", time="t", action="sync", ok=True, summary="", limit=3)
    assert [(e.id, e.commit) for e in entries] == [(3, "c2"), (4, "c3"), (5, "c4")]
    assert history.resolve_target(entries, "4") == "c3"
    assert history.resolve_target(entries, "HEAD~1") is None  # a git revision, resolved by git
    with pytest.raises(ReconcilerError, match="no history entry 1 .ids: 3, 4, 5."):
        history.resolve_target(entries, "1")


class _Result:
    def __init__(self, ok: bool, errors: dict | None = None) -> None:
        self.ok, self.model_errors, self.notes = ok, errors or {}, []

    def summary(self) -> Summary:
        s = Summary()
        s.add(Action.created)
        return s


def test_commit_statuses_and_webhook_messages():
    assert commit_status("prod").body() == {"state": "pending", "context": "reconciler/prod",
                                            "description": "syncing to prod"}
    ok = commit_status("prod", result=_Result(True), target_url="https://r.example/prod")
    assert (ok.state, ok.description, ok.body()["target_url"]) == ("success", "prod: 1 created", "https://r.example/prod")
    bad = commit_status("prod", result=_Result(False, {"iris-classifier": ["x"]}))
    assert bad.state == "failure" and "iris-classifier" in bad.description
    down = commit_status("prod", error="sync of prod stopped: API down\nmore")
    assert (down.state, down.description) == ("failure", "prod: sync of prod stopped: API down")
    assert len(commit_status("prod", error="x" * 500).body()["description"]) == 140
    assert message("rollback", "prod", "0123456789abcdef", "from c") == {
        "text": ":rewind: rollback in prod at 0123456789ab: from c"}


def test_status_formats_say_synced_drift_and_health():
    status = EnvironmentStatus("dev", "models-dev", head="b" * 40, deployed="a" * 40, ok=True,
                               models={"iris": ModelStatus("iris", 3, ["Deployment/iris: spec.replicas: 3 -> 1"],
                                                           "healthy", canary="progressing 25%")})
    assert (status.sync_state, status.drifted, status.health) == ("out of sync", True, "healthy")
    text = "\n".join(to_text([status]))
    assert "dev (models-dev): out of sync; deployed aaaaaaaaaaaa" in text
    assert "iris: 3 objects; drift: yes; health: healthy; canary: progressing 25%" in text
    assert "Deployment/iris: spec.replicas: 3 -> 1" in text
    markdown = to_markdown([status])
    assert "| `dev` | `aaaaaaaaaaaa` | `bbbbbbbbbbbb` | out of sync | yes | healthy |" in markdown
    assert "| `iris` | 3 | `Deployment/iris: spec.replicas: 3 -> 1` | healthy | progressing 25\\% |" in markdown
    pinned = EnvironmentStatus("prod", "p", head="b" * 40, deployed="a" * 40, pinned_head="b" * 40)
    assert pinned.sync_state.startswith("rolled back")
    assert status.as_dict()["models"][0]["drift"] == ["Deployment/iris: spec.replicas: 3 -> 1"]


def test_status_text_lists_source_policy_suspension_and_every_object():
    resources = {"Deployment/models-dev/iris": ResourceStatus("Deployment/models-dev/iris", "OutOfSync", "progressing",
                                                              "1 of 2 replicas updated"),
                 "Service/models-dev/iris": ResourceStatus("Service/models-dev/iris", "Synced", "healthy")}
    status = EnvironmentStatus("dev", "models-dev", head="b" * 40, deployed="a" * 40, local_head="a" * 40,
                               source="origin/main (https://github.com/acme/models) at bbbbbbbbbbbb, fetched from the "
                                      "remote now",
                               suspended="2026-12-07T10:00:00Z by alice: incident 42",
                               policy=sync_policy(SyncOptions(self_heal=True)),
                               models={"iris": ModelStatus("iris", 2, health="progressing", resources=resources)})
    text = "\n".join(to_text([status]))
    assert ("  source: origin/main (https://github.com/acme/models) at bbbbbbbbbbbb, fetched from the remote now; "
            "local checkout at aaaaaaaaaaaa") in text
    assert ("  sync policy: automated (prune: on, self-heal: on); SUSPENDED 2026-12-07T10:00:00Z by alice: "
            "incident 42 (`reconciler resume dev`)") in text
    assert "      Deployment/models-dev/iris  OutOfSync  progressing  (1 of 2 replicas updated)" in text
    assert "      Service/models-dev/iris  Synced  healthy" in text
    as_dict = status.as_dict()
    assert (as_dict["syncPolicy"], as_dict["localHead"]) == ("automated (prune: on, self-heal: on)", "a" * 40)
    assert [r["sync"] for r in as_dict["models"][0]["resources"]] == ["OutOfSync", "Synced"]
    never = EnvironmentStatus("dev", "models-dev", head="b" * 40)
    assert "sync policy: manual (no `reconciler run` pass recorded)" in "\n".join(to_text([never]))
    assert never.as_dict()["syncPolicy"] == "manual"


def test_a_remote_url_is_shown_without_its_credentials():
    assert redact_url("https://x-access-token:ghs_SECRET@github.com/acme/models.git") == \
        "https://github.com/acme/models.git"
    assert redact_url("ssh://git@github.com/acme/models.git") == "ssh://github.com/acme/models.git"
    assert redact_url("git@github.com:acme/models.git") == "git@github.com:acme/models.git"  # scp form: no secret
    assert redact_url("/srv/git/models.git") == "/srv/git/models.git"


def test_a_dry_run_summary_says_what_it_would_do():
    s = Summary()
    for action in [Action.created] * 11 + [Action.pruned, Action.unchanged]:
        s.add(action)
    assert s.would() == "dry run: would create 11, would prune 1, 1 unchanged"
    assert Summary().would() == "dry run: nothing to do"
