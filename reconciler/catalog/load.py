"""The catalog: every model, environment and pool in a repository tree, validated.

A broken model is recorded in `Catalog.errors` and left out of `Catalog.models`: it never stops the
other models from being planned, built or rendered. A broken pools file or environment, on the
other hand, affects every model in it, so it is an error of the environment (`env_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ReconcilerError, SpecError, SpecProblem, UnsafePathError, closest, did_you_mean
from reconciler.catalog.buckets import threshold_problems
from reconciler.catalog.effective import metrics_needs, monitoring_problem
from reconciler.catalog.files import load, read_yaml
from reconciler.catalog.kinds import AcceleratorKind, names as kind_names
from reconciler.catalog.pools import Pool, PoolsFile
from reconciler.catalog.recipes import Registry, load_registry
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.catalog.training import lock_problems
from reconciler.labels import MODEL as MODEL_LABEL
from reconciler.source import guard
from reconciler.catalog.accelerators import NEEDS_COMPILE, NEURON_SDKS, compile_problem

MODELS_DIR = "models"
ENVIRONMENTS_DIR = "environments"
POOLS_FILE = "environments/pools.yaml"
MODEL_FILE = "model.yaml"
ENVIRONMENT_FILE = "environment.yaml"
NON_ENVIRONMENT_DIRS = {"base", "reconciler"}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path  # models/<name>, absolute
    spec: ModelSpec

    @property
    def rel(self) -> str:
        return f"{MODELS_DIR}/{self.name}"


@dataclass
class Catalog:
    root: Path
    pools: dict[str, Pool] = field(default_factory=dict)
    environments: dict[str, EnvironmentSpec] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    errors: dict[str, SpecError] = field(default_factory=dict)  # model folder name -> why it was left out
    env_errors: dict[str, SpecError] = field(default_factory=dict)  # environment name (or '*') -> error
    recipes: Registry = field(default_factory=lambda: Registry(()))  # the compile recipes (pipelines/recipes/)

    def environment(self, name: str) -> EnvironmentSpec:
        if name in self.env_errors:
            raise self.env_errors[name]
        if "*" in self.env_errors:
            raise self.env_errors["*"]
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            match = closest(name, self.environments)
            raise SpecError.single(f"{ENVIRONMENTS_DIR}/{name}/{ENVIRONMENT_FILE}",
                                   f"no environment named {name!r}{did_you_mean(name, self.environments)} "
                                   f"(known: {known})",
                                   fix=f"use {match!r}" if match else
                                   f"create {ENVIRONMENTS_DIR}/{name}/{ENVIRONMENT_FILE} or pick a known one") from None


def model_folders(root: Path) -> list[str]:
    """The names of the folders under models/ that hold a model.yaml."""
    models = Path(root) / MODELS_DIR
    return sorted(p.name for p in models.iterdir() if (p / MODEL_FILE).is_file()) if models.is_dir() else []


def unknown_model_fix(root: Path, name: str) -> str:
    """The fix for a model name that is no folder under models/: the one meant, or the known ones."""
    known = model_folders(root)
    match = closest(name, known)
    if match:
        return f"use {match!r} (did you mean it?), a folder under models/"
    return f"use one of the folders under models/: {', '.join(known) or 'none yet'}"


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _load_model(root: Path, folder: Path, lock_texts: dict[str, str | OSError] | None = None) -> ModelEntry:
    """One model folder, validated (`root` resolved, as load_catalog has it; `lock_texts`: that load's)."""
    spec_path = folder / MODEL_FILE
    spec: ModelSpec = load(ModelSpec, spec_path, display=_rel(root, spec_path), root=root)
    problems = []
    if spec.name != folder.name:
        problems.append(SpecProblem(_rel(root, spec_path), f"name {spec.name!r} does not match its folder {folder.name!r}",
                                    field="name", fix=f"set name: {folder.name} or rename the folder"))
    spec_rel = _rel(root, spec_path)
    folder_rel = f"{MODELS_DIR}/{folder.name}"
    for what, rel in (("bentofile", spec.bentofile), ("service", spec.service.split(":")[0]),
                      *(("artifact", a) for a in spec.artifacts)):
        try:
            present = guard.inside(root, folder / rel, display=f"{_rel(root, folder)}/{rel}").is_file()
        except UnsafePathError as exc:
            field_name = {"bentofile": "bentofile", "service": "service"}.get(what, "artifacts")
            problems.extend(SpecProblem(_rel(root, spec_path), f"{what} {rel!r}: {p.message}", field=field_name,
                                        fix=p.fix) for p in exc.problems)
            continue
        if not present:
            field_name = {"bentofile": "bentofile", "service": "service"}.get(what, "artifacts")
            fix = {"bentofile": f"add {folder_rel}/{rel} (see docs/model-spec.md), or point 'bentofile' at it",
                   "service": f"add {folder_rel}/{rel} with the BentoML service class",
                   }.get(what, f"train and register the model: `reconciler pipeline run train --model {folder.name} "
                               f"--push` (or `dvc add` the file in {folder_rel}/ and commit the pointer)")
            problems.append(SpecProblem(spec_rel, f"{folder_rel}/{rel} ({what}) is missing", field=field_name, fix=fix))
    bentofile = folder / spec.bentofile
    if bentofile.is_file() and bentofile.resolve().is_relative_to(root):  # (outside: reported above)
        problems.extend(bentofile_problems(root, bentofile, spec, spec_rel, inside=True))
    targets = [spec.accelerator] if isinstance(spec.accelerator, str) else \
        [t for v in spec.accelerator.values() for t in ([v] if isinstance(v, str) else v)]
    kinds = {k for k in kind_names() if spec.images.get(k) is not None or k in targets}
    problems.extend(lock_problems(root, folder, kinds, spec.service.split(":")[0], texts=lock_texts))
    if problems:
        raise SpecError(problems)
    return ModelEntry(spec.name, folder, spec)


def bentofile_problems(root: Path, bentofile: Path, spec: ModelSpec, spec_rel: str, *,
                       inside: bool | None = None) -> list[SpecProblem]:
    """model.yaml is the single source of truth for the service and the name: a bentofile saying
    otherwise (a copy of another model's, say) is an error naming both files. `inside`: the caller
    already resolved the bentofile into `root`."""
    if inside is None:
        inside = bentofile.resolve().is_relative_to(root)
    shown = _rel(root, bentofile) if inside else str(bentofile)
    data = read_yaml(bentofile, display=shown)
    if not isinstance(data, dict):
        return [SpecProblem(shown, "expected a mapping at the top level", fix="see BentoML's bentofile reference")]
    problems = []
    if data.get("service") not in (None, spec.service):
        problems.append(SpecProblem(shown, f"service {data.get('service')!r} differs from {spec_rel} service "
                                           f"{spec.service!r} (model.yaml is the single source of truth)",
                                    field="service", fix=f"remove service: from {shown}, or set it to {spec.service!r}"))
    if data.get("name") not in (None, spec.name):
        problems.append(SpecProblem(shown, f"name {data.get('name')!r} differs from the model's name {spec.name!r} "
                                           f"in {spec_rel}", field="name",
                                    fix=f"set name: {spec.name} in {shown} (it names the Bento)"))
    model_label = (data.get("labels") or {}).get(MODEL_LABEL) if isinstance(data.get("labels"), dict) else None
    if model_label not in (None, spec.name):
        problems.append(SpecProblem(shown, f"label {MODEL_LABEL}={model_label!r} names another model than "
                                           f"{spec_rel} ({spec.name!r})", field=f"labels.{MODEL_LABEL}",
                                    fix=f"set {MODEL_LABEL}: {spec.name} in {shown}"))
    return problems


def load_catalog(root: Path, *, only: set[str] | None = None) -> Catalog:
    """Read and validate the whole repository tree rooted at `root`.

    `only` restricts which model folders are read (the others are neither loaded nor reported).
    """
    root = root.resolve()
    catalog = Catalog(root)
    try:
        catalog.pools = load(PoolsFile, root / POOLS_FILE, display=POOLS_FILE, root=root).pools
    except SpecError as exc:
        catalog.env_errors["*"] = exc

    env_root = root / ENVIRONMENTS_DIR
    for folder in sorted(p for p in env_root.iterdir() if p.is_dir()) if env_root.is_dir() else []:
        if folder.name in NON_ENVIRONMENT_DIRS or not os.path.lexists(folder / ENVIRONMENT_FILE):
            continue
        rel = _rel(root, folder / ENVIRONMENT_FILE)
        try:
            env: EnvironmentSpec = load(EnvironmentSpec, folder / ENVIRONMENT_FILE, display=rel, root=root)
            problems = []
            if env.name != folder.name:
                problems.append(SpecProblem(rel, f"name {env.name!r} does not match its folder {folder.name!r}",
                                            field="name", fix=f"set name: {folder.name}"))
            for i, pool in enumerate(env.pools):
                if "*" not in catalog.env_errors and pool not in catalog.pools:
                    problems.append(_unknown_pool(rel, f"pools.{i}", pool, catalog.pools))
                fallback = catalog.pools[pool].fallback if pool in catalog.pools else None
                if fallback and fallback not in env.pools:
                    problems.append(SpecProblem(
                        rel, f"spot pool {pool!r} falls back to {fallback!r}, which this environment does not list",
                        field=f"pools.{i}", fix=f"add {fallback} to pools: (its nodes take the pods when spot "
                                                "capacity is gone)"))
            if problems:
                raise SpecError(problems)
            catalog.environments[env.name] = env
        except SpecError as exc:
            catalog.env_errors[folder.name] = exc

    _check_promotion(catalog)
    catalog.recipes = load_registry(root)

    models_root = root / MODELS_DIR
    lock_texts: dict[str, str | OSError] = {}  # the shared lock, read once for every model of this load
    for folder in sorted(p for p in models_root.iterdir() if p.is_dir()) if models_root.is_dir() else []:
        if only is not None and folder.name not in only:
            continue
        if not os.path.lexists(folder / MODEL_FILE):
            catalog.errors[folder.name] = SpecError.single(
                f"{MODELS_DIR}/{folder.name}", f"no {MODEL_FILE} in the model folder",
                fix=f"add {MODELS_DIR}/{folder.name}/{MODEL_FILE}, or remove the folder")
            continue
        try:
            entry = _load_model(root, folder, lock_texts)
            _check_placements(catalog, entry)
            catalog.models[entry.name] = entry
        except SpecError as exc:
            catalog.errors[folder.name] = exc
    return catalog


def _check_promotion(catalog: Catalog) -> None:
    """`promotesFrom` names another environment, and the chain has no cycle."""
    known = set(catalog.environments) | set(catalog.env_errors)
    for name, env in sorted(catalog.environments.items()):
        rel = f"{ENVIRONMENTS_DIR}/{name}/{ENVIRONMENT_FILE}"
        seen, current = [name], env.promotes_from
        while current is not None:
            if current not in known:
                catalog.env_errors[name] = SpecError.single(
                    rel, f"promotesFrom names {current!r}, which is not an environment "
                         f"(known: {', '.join(sorted(known))})", field="promotesFrom",
                    fix="name the environment a change reaches before this one, or remove the field")
                break
            if current in seen:
                catalog.env_errors[name] = SpecError.single(
                    rel, f"promotesFrom makes a cycle: {' <- '.join([*seen, current])}", field="promotesFrom",
                    fix="promotion runs one way (dev -> staging -> prod): remove promotesFrom from the first environment")
                break
            seen.append(current)
            nxt = catalog.environments.get(current)
            current = nxt.promotes_from if nxt is not None else None
    for name in catalog.env_errors:
        catalog.environments.pop(name, None)


def promotion_order(names: list[str] | set[str], promotes_from: dict[str, str | None]) -> list[str]:
    """Environments in the order a change reaches them: an environment after the one it promotes
    from (dev -> staging -> prod); otherwise by name. Pure; unknown or cyclic links are ignored."""
    names = sorted(set(names))

    def depth(name: str) -> int:
        seen = {name}
        current, n = promotes_from.get(name), 0
        while current is not None and current in names and current not in seen:
            seen.add(current)
            n += 1
            current = promotes_from.get(current)
        return n

    order: list[str] = []
    placed: set[str] = set()

    def place(name: str, trail: frozenset[str]) -> None:
        if name in placed or name in trail:
            return
        parent = promotes_from.get(name)
        if parent in names:
            place(parent, trail | {name})
        placed.add(name)
        order.append(name)

    for name in sorted(names, key=lambda n: (depth(n), n)):
        place(name, frozenset())
    return order


def _unknown_pool(file: str, field_name: str, name: str, pools: dict[str, Pool]) -> SpecProblem:
    known = ", ".join(sorted(pools)) or "none"
    return SpecProblem(file, f"unknown pool {name!r}{did_you_mean(name, pools)} (pools declared in {POOLS_FILE}: "
                             f"{known})", field=field_name,
                       fix=f"use one of the declared pools, a kind ({', '.join(kind_names())}), or declare {name!r} in {POOLS_FILE}")


def _check_placements(catalog: Catalog, entry: ModelEntry) -> None:
    problems = []
    file = f"{entry.rel}/{MODEL_FILE}"
    inferentia = entry.spec.images.get("inferentia")
    if inferentia is not None and inferentia.neuron_sdk and inferentia.neuron_sdk not in NEURON_SDKS:
        problems.append(SpecProblem(file, f"unknown Neuron SDK {inferentia.neuron_sdk!r}", field="images.inferentia.neuronSdk",
                                    fix=f"use one of {', '.join(sorted(NEURON_SDKS))}, or add the release to NEURON_SDKS "
                                        "in reconciler/catalog/accelerators.py"))
    for env in catalog.environments.values():
        problems.extend(p for p in threshold_problems(entry.spec, env, file, f"{ENVIRONMENTS_DIR}/{env.name}/"
                                                      f"{ENVIRONMENT_FILE}") if p not in problems)
        try:
            pools = placements(entry, env, catalog.pools)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        for pool in pools:  # compile eligibility: an Inferentia pool needs a recipe that accepts the model
            if pool.kind in NEEDS_COMPILE:  # an unreadable recipe entry may be the one this model needs
                problems.extend(p for p in catalog.recipes.errors if p not in problems)
            problem = compile_problem(entry.name, entry.spec.architecture, pool.kind, f"({pool.name}) in {env.name}",
                                      catalog.recipes.recipes)
            if problem is not None and not any(p.message == problem[0] for p in problems):
                problems.append(SpecProblem(file, problem[0], field="architecture", fix=problem[1]))
    if problems:
        raise SpecError(problems)


def placements(entry: ModelEntry, env: EnvironmentSpec, pools: dict[str, Pool]) -> list[Pool]:
    """The pools a model serves from in an environment: a kind picks the environment's pool of that kind."""
    targets = entry.spec.targets_for(env.name) or [env.defaults.accelerator]
    file = f"{entry.rel}/{MODEL_FILE}"
    field_name = "accelerator" if isinstance(entry.spec.accelerator, str) else f"accelerator.{env.name}"
    if entry.spec.targets_for(env.name) is None:
        file, field_name = f"{ENVIRONMENTS_DIR}/{env.name}/{ENVIRONMENT_FILE}", "defaults.accelerator"
    result: list[Pool] = []
    kinds = {k.value for k in AcceleratorKind}
    for target in targets:
        if target in kinds:
            matching = [pools[p] for p in env.pools if p in pools and pools[p].kind.value == target]
            if not matching:
                raise SpecError([SpecProblem(
                    file, f"environment {env.name!r} has no {target} pool (it has: {', '.join(env.pools)})",
                    field=field_name, fix=f"target another kind in {env.name}, or add a {target} pool to "
                                          f"{ENVIRONMENTS_DIR}/{env.name}/{ENVIRONMENT_FILE}")])
            pool = matching[0]
        elif target in pools:
            if target not in env.pools:
                raise SpecError([SpecProblem(
                    file, f"pool {target!r} is not available in environment {env.name!r} (it has: {', '.join(env.pools)})",
                    field=field_name, fix=f"list {target} under pools: in {ENVIRONMENTS_DIR}/{env.name}/{ENVIRONMENT_FILE}")])
            pool = pools[target]
        else:
            raise SpecError([_unknown_pool(file, field_name, target, pools)])
        if pool.spot and not entry.spec.spot:
            if pool.fallback is None or pool.fallback not in pools:
                raise SpecError([SpecProblem(
                    f"{entry.rel}/{MODEL_FILE}", f"the model refuses spot capacity (spot: false) but pool "
                    f"{pool.name!r} in {env.name} is a spot pool without an on-demand fallback",
                    field="spot", fix=f"target an on-demand pool in {env.name}, give {pool.name!r} a fallback: "
                                      f"in {POOLS_FILE}, or allow spot (remove spot: false)")])
            pool = pools[pool.fallback]  # the on-demand pool behind the spot one
        if pool not in result:
            result.append(pool)
    return result


def model_kinds(catalog: Catalog, entry: ModelEntry, environment: str | None = None) -> list[AcceleratorKind]:
    """The pool kinds a model is served from (in one environment, or in any): one image per kind.
    cpu first, then gpu, then inferentia."""
    envs = [catalog.environments[environment]] if environment in catalog.environments else \
        list(catalog.environments.values())
    kinds: set[AcceleratorKind] = set()
    for env in envs:
        try:
            kinds |= {p.kind for p in placements(entry, env, catalog.pools)}
        except ReconcilerError:
            continue  # reported by the catalog as the model's error
    order = list(AcceleratorKind)
    return sorted(kinds or {AcceleratorKind.cpu}, key=order.index)


def unscraped_metrics(catalog: Catalog, env: EnvironmentSpec, models: Iterable[str] | None = None) -> SpecProblem | None:
    """The warning of an environment with `monitoring: none` whose models (the named ones, default all) read scraped
    request metrics (catalog.effective.monitoring_problem); None when something scrapes them or nothing reads them.
    A model not placed in the environment is left out (its placement is an error of its own)."""
    if env.monitoring != "none":
        return None
    needs = {}
    for name in sorted(catalog.models if models is None else models):
        entry = catalog.models.get(name)
        if entry is None:
            continue
        try:
            kinds = [p.kind for p in placements(entry, env, catalog.pools)]
        except ReconcilerError:
            continue
        needs[name] = metrics_needs(entry.spec, env, kinds)
    return monitoring_problem(env, f"{ENVIRONMENTS_DIR}/{env.name}/{ENVIRONMENT_FILE}", needs)
