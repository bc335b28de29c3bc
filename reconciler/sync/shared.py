"""Cluster-scoped objects that several environments declare: who owns them, and when one may go.

A PriorityClass (``priorityClasses:`` in environment.yaml) or a CRD lives outside every namespace, so two
environments that share a cluster both render it and both inventories list it. With one field manager
and ``force`` for everyone, the last environment to sync would win every field (and rewrite whatever
differs on every pass), and an environment that stopped declaring it would delete it from under the
other. Argo CD reports such an object as a SharedResourceWarning and Flux leaves it to the last applier;
here the API server's own field ownership decides, as server-side apply intends:

* Each environment applies a shared object as its own field manager, ``<manager>/<env>@<namespace>``
  (:func:`environment_manager`), without ``force``. Environments that declare the same content share
  ownership of every field; the object's managedFields then name every environment that declares it.
* An environment that declares a different value gets the server's 409 conflict naming the other
  environment and the field: its dry run fails, so its environment group is skipped with that error and
  nothing is written (no flip-flop). A conflict with a manager that is not an environment (kubectl edit,
  a reconciler from before this rule) is taken back with ``force``, as for any object.
* An environment that no longer declares it *releases* it (an empty apply as its manager ends its
  ownership) while another environment's manager still owns it; the last declaring environment deletes it.

The decisions (which kinds are shared, who declares, what a conflict says) are pure functions here; the
executor (reconciler.sync.engine) does the requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from reconciler.errors import Conflict, Invalid, KubeError
from reconciler.results import ObjectRef

_CONFLICT_WITH = re.compile(r'conflicts? with "([^"]+)"')


def is_shared(ref: ObjectRef) -> bool:
    """Cluster-scoped and declared in git: another environment on the same cluster may declare it too.
    (An environment's own Namespace is its own: two environments never share one.)"""
    return ref.namespace is None and ref.kind != "Namespace"


def environment_manager(field_manager: str, environment: str, namespace: str) -> str:
    """The field manager an environment applies shared objects as (the namespace tells apart two
    reconcilers whose repositories both name an environment `staging`)."""
    return f"{field_manager}/{environment}@{namespace}"


def _environment_of(manager: str, field_manager: str) -> str | None:
    prefix = f"{field_manager}/"
    return manager[len(prefix):] if manager.startswith(prefix) and len(manager) > len(prefix) else None


def declaring_environments(live: dict | None, field_manager: str) -> set[str]:
    """``env@namespace`` of every environment whose manager holds an applied configuration of ``live``."""
    out: set[str] = set()
    for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
        env = _environment_of(str(entry.get("manager") or ""), field_manager)
        if env and entry.get("operation") == "Apply" and entry.get("fieldsV1"):
            out.add(env)
    return out


def conflicts_by_manager(exc: KubeError) -> dict[str, list[str]]:
    """The fields of a server-side apply conflict (409), by the manager that holds them."""
    out: dict[str, list[str]] = {}
    causes = ((exc.payload or {}).get("details") or {}).get("causes") or []
    for cause in causes:
        if cause.get("reason") != "FieldManagerConflict":
            continue
        match = _CONFLICT_WITH.search(str(cause.get("message") or ""))
        if match:
            out.setdefault(match.group(1), []).append(str(cause.get("field") or "?"))
    return out


def environment_conflict(exc: KubeError, ref: ObjectRef, field_manager: str, environment: str,
                         namespace: str) -> KubeError | None:
    """The error to report when ``exc`` is a conflict with other environments' managers (they declare
    ``ref`` differently); None when it is not a conflict, or one with non-environment managers only."""
    if not isinstance(exc, Conflict):
        return None
    mine = environment_manager(field_manager, environment, namespace)
    others = {env: fields for manager, fields in conflicts_by_manager(exc).items()
              if manager != mine and (env := _environment_of(manager, field_manager))}
    if not others:
        return None
    described = "; ".join(f"environment {env}: {', '.join(sorted(set(fields)))}" for env, fields in sorted(others.items()))
    first = sorted(others)[0]
    return Invalid(
        f"{ref} is shared by the environments on this cluster, and another one declares it differently "
        f"({described}): not applied, so neither environment overwrites the other",
        status=409, reason="SharedResourceConflict", causes=[],
        fix=f"declare the same {ref.kind} in every environment that syncs to this cluster (or give it another "
            f"name); if environment {first} no longer syncs here, release its ownership: "
            f"kubectl apply --server-side --field-manager='{field_manager}/{first}' -f - <<< "
            f"'{{\"apiVersion\": \"{ref.api_version}\", \"kind\": \"{ref.kind}\", \"metadata\": {{\"name\": \"{ref.name}\"}}}}'")


def release_body(ref: ObjectRef) -> dict:
    """An empty applied configuration: applied as an environment's manager, it ends that manager's
    ownership of every field (fields another manager co-owns stay as they are)."""
    return {"apiVersion": ref.api_version, "kind": ref.kind, "metadata": {"name": ref.name}}


def describe(environments: Iterable[str]) -> str:
    names = sorted(environments)
    return ("environment " if len(names) == 1 else "environments ") + ", ".join(names)
