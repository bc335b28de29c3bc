"""Model content hashes over real git repositories (made with GitPython in tmp dirs)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import git
import pytest

from reconciler.errors import SourceError
from reconciler.source.git import git_blob_id
from reconciler.source.hashing import (ModelHash, changed_models, changes, describe, dvc_outputs, model_hashes, python_imports)
from reconciler.catalog.specs import ModelSpec


class Entry:
    def __init__(self, root: Path, name: str, **spec) -> None:
        self.name = name
        self.path = root / "models" / name
        self.spec = ModelSpec(name=name, owner="t@example.com", service="service.py:Svc",
                              artifacts=spec.pop("artifacts", ["model.pkl.dvc"]), **spec)


def pointer(md5: str, path: str = "model.pkl") -> str:
    return f"outs:\n- md5: {md5}\n  size: 10\n  hash: md5\n  path: {path}\n"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def commit(repo: git.Repo, message: str) -> str:
    repo.git.add(A=True)
    return repo.index.commit(message).hexsha


def model_files(name: str, md5: str = "a" * 32, service: str = "import numpy\nclass Svc: ...\n") -> dict[str, str]:
    return {
        f"models/{name}/model.yaml": f"name: {name}\nowner: t@example.com\nservice: service.py:Svc\n",
        f"models/{name}/service.py": service,
        f"models/{name}/bentofile.yaml": "service: service.py:Svc\npython: {lock_packages: false}\n",
        f"models/{name}/model.pkl.dvc": pointer(md5),
        f"models/{name}/.gitignore": "/model.pkl\n",
    }


@pytest.fixture
def repo(tmp_path: Path) -> tuple[git.Repo, Path]:
    root = tmp_path / "repo"
    root.mkdir()
    r = git.Repo.init(root)
    r.git.config("user.email", "t@example.com")
    r.git.config("user.name", "t")
    write(root, {
        **model_files("alpha", service="from common.features import scale\nclass Svc: ...\n"),
        **model_files("beta", md5="b" * 32),
        "common/__init__.py": "",
        "common/features.py": "from .units import METRE\nfrom pipelines import steps\ndef scale(x): return x\n",
        "common/units.py": "METRE = 1\n",
        "common/unused.py": "X = 1\n",
        "pipelines/__init__.py": "",
        "pipelines/steps.py": "import os\n",
        "README.md": "hello\n",
    })
    commit(r, "initial")
    return r, root


def entries(root: Path) -> list[Entry]:
    return [Entry(root, "alpha"), Entry(root, "beta")]


def test_blob_id_is_git_hash_object(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"some content\n\0binary")
    expected = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert git_blob_id(f.read_bytes()) == expected


def test_revision_and_working_tree_agree_and_use_git_blob_ids(repo) -> None:
    r, root = repo
    at_head = model_hashes(root, "HEAD", entries(root))
    worktree = model_hashes(root, None, entries(root))
    assert at_head == worktree
    alpha = at_head["alpha"]
    assert alpha.inputs["models/alpha/service.py"] == f"blob:{r.head.commit.tree['models/alpha/service.py'].hexsha}"
    assert alpha.inputs["models/alpha/model.pkl"] == "md5:" + "a" * 32
    assert alpha.kinds["models/alpha/bentofile.yaml"] == "bentofile"
    assert len(alpha.digest) == 64 and alpha.digest != at_head["beta"].digest


def test_shared_code_is_followed_transitively_and_only_what_is_imported(repo) -> None:
    _, root = repo
    alpha = model_hashes(root, None, entries(root))["alpha"]
    shared = {p for p, k in alpha.kinds.items() if k == "shared-code"}
    assert shared == {"common/__init__.py", "common/features.py", "common/units.py",
                      "pipelines/__init__.py", "pipelines/steps.py"}
    beta = model_hashes(root, None, entries(root))["beta"]
    assert not any(k == "shared-code" for k in beta.kinds.values())


def test_stable_across_clones(repo, tmp_path: Path) -> None:
    r, root = repo
    clone_root = tmp_path / "clone"
    git.Repo.clone_from(root, clone_root)
    here = model_hashes(root, "HEAD", entries(root))
    there_rev = model_hashes(clone_root, "HEAD", entries(clone_root))
    there_tree = model_hashes(clone_root, None, entries(clone_root))
    assert {n: h.digest for n, h in here.items()} == {n: h.digest for n, h in there_rev.items()}
    assert {n: h.digest for n, h in here.items()} == {n: h.digest for n, h in there_tree.items()}


def test_editing_one_model_changes_only_its_hash(repo) -> None:
    r, root = repo
    before = r.head.commit.hexsha
    (root / "models/beta/service.py").write_text("import numpy\nclass Svc:\n    version = 2\n")
    after = commit(r, "edit beta")
    old = model_hashes(root, before, entries(root))
    new = model_hashes(root, after, entries(root))
    diff = changed_models(old, new)
    assert list(diff) == ["beta"]
    assert [(c.path, c.kind) for c in diff["beta"]] == [("models/beta/service.py", "code")]
    assert old["alpha"] == new["alpha"]


def test_unrelated_and_unimported_files_change_nothing(repo) -> None:
    r, root = repo
    old = model_hashes(root, "HEAD", entries(root))
    write(root, {"README.md": "changed\n", "common/unused.py": "X = 2\n", "docs/new.md": "x\n",
                 "models/alpha/model.yaml": "name: alpha\nowner: other@example.com\nservice: service.py:Svc\n"
                                            "serving: {replicas: 7}\n"})
    commit(r, "unrelated")
    assert changed_models(old, model_hashes(root, "HEAD", entries(root))) == {}


def test_shared_module_edit_changes_only_importers(repo) -> None:
    r, root = repo
    old = model_hashes(root, "HEAD", entries(root))
    write(root, {"common/units.py": "METRE = 100\n"})
    diff = changed_models(old, model_hashes(root, None, entries(root)))
    assert list(diff) == ["alpha"]
    assert describe(diff["alpha"]) == "shared-code: common/units.py"


def test_dvc_md5_alone_changes_the_hash_and_is_reported_as_data(repo) -> None:
    r, root = repo
    old = model_hashes(root, "HEAD", entries(root))
    write(root, {"models/beta/model.pkl.dvc": pointer("c" * 32)})
    new = model_hashes(root, None, entries(root))
    diff = changed_models(old, new)
    assert list(diff) == ["beta"]
    assert diff["beta"][0].path == "models/beta/model.pkl"
    assert (diff["beta"][0].kind, diff["beta"][0].before, diff["beta"][0].after) == ("data", "md5:" + "b" * 32, "md5:" + "c" * 32)


def test_identical_pointers_in_two_models_name_their_own_outputs(repo) -> None:
    r, root = repo
    write(root, {"models/beta/model.pkl.dvc": pointer("a" * 32)})  # same bytes as alpha's pointer
    commit(r, "same weights")
    for rev in ("HEAD", None):
        hashes = model_hashes(root, rev, entries(root))
        assert hashes["alpha"].inputs["models/alpha/model.pkl"] == "md5:" + "a" * 32
        assert hashes["beta"].inputs["models/beta/model.pkl"] == "md5:" + "a" * 32
        assert "models/alpha/model.pkl" not in hashes["beta"].inputs


def test_reformatting_a_pointer_without_changing_md5_changes_nothing(repo) -> None:
    r, root = repo
    old = model_hashes(root, None, entries(root))
    write(root, {"models/beta/model.pkl.dvc": "# pointer\n" + pointer("b" * 32).replace("size: 10", "size: 11")})
    assert changed_models(old, model_hashes(root, None, entries(root))) == {}


def test_working_tree_honours_gitignore_and_sees_untracked_files(repo) -> None:
    r, root = repo
    old = model_hashes(root, None, entries(root))
    (root / "models/alpha/model.pkl").write_bytes(b"weights")  # ignored by models/alpha/.gitignore (dvc add)
    (root / ".gitignore").write_text("*.log\n")
    (root / "models/alpha/debug.log").write_text("noise")
    mid = model_hashes(root, None, entries(root))
    assert mid["alpha"] == old["alpha"]
    (root / "models/alpha/helpers.py").write_text("X = 1\n")  # untracked, not ignored: part of the build
    new = model_hashes(root, None, entries(root))
    assert [c.path for c in changes(old["alpha"], new["alpha"])] == ["models/alpha/helpers.py"]


def test_dvc_lock_outputs_are_inputs(repo) -> None:
    r, root = repo
    write(root, {"models/beta/dvc.lock": "schema: '2.0'\nstages:\n  train:\n    cmd: python train.py\n"
                                         "    outs:\n    - path: out/model.bin\n      md5: " + "d" * 32 + "\n"})
    h = model_hashes(root, None, entries(root))["beta"]
    assert h.inputs["models/beta/out/model.bin"] == "md5:" + "d" * 32
    assert "models/beta/dvc.lock" not in h.inputs


def test_missing_pointer_is_an_input_not_a_crash(repo) -> None:
    r, root = repo
    h = model_hashes(root, None, [Entry(root, "beta", artifacts=["model.pkl.dvc", "other.bin.dvc"])])["beta"]
    assert h.inputs["models/beta/other.bin.dvc"] == "missing"


def test_bad_revision_and_non_repository_raise_source_error(repo, tmp_path: Path) -> None:
    _, root = repo
    with pytest.raises(SourceError, match="no-such-rev"):
        model_hashes(root, "no-such-rev", entries(root))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(SourceError, match="not inside a git repository"):
        model_hashes(plain, None, [])


def test_pure_helpers() -> None:
    assert python_imports(b"import a.b\nfrom .x import y, z\ndef f():\n    from c import *\n") == (
        (0, "a.b", ()), (1, "x", ("y", "z")), (0, "c", ()))
    assert python_imports(b"def broken(:\n") == ()
    assert dvc_outputs(pointer("e" * 32, "w.bin").encode(), "models/m/w.bin.dvc") == (("models/m/w.bin", "md5:" + "e" * 32),)
    assert dvc_outputs(b": : not yaml", "m/x.dvc") is None
    h = ModelHash("m", hashlib.sha256(b"").hexdigest(), {"a": "1"})
    assert h.short == h.digest[:12]
    assert [str(c) for c in changes(None, h)] == ["file added: a"]


def test_repository_in_a_subfolder_of_a_bigger_git_repository(tmp_path: Path) -> None:
    outer = tmp_path / "mono"
    r = git.Repo.init(outer)
    r.git.config("user.email", "t@example.com")
    r.git.config("user.name", "t")
    root = outer / "ml" / "gitops"
    write(root, {**model_files("alpha"), "common/__init__.py": ""})
    write(outer, {"models/alpha/service.py": "unrelated folder of the same name outside the template\n"})
    commit(r, "mono")
    at_head = model_hashes(root, "HEAD", [Entry(root, "alpha")])["alpha"]
    assert at_head == model_hashes(root, None, [Entry(root, "alpha")])["alpha"]
    assert "models/alpha/service.py" in at_head.inputs
    expected = git_blob_id((root / "models/alpha/service.py").read_bytes())
    assert at_head.inputs["models/alpha/service.py"] == f"blob:{expected}"


def test_one_model_hashed_alone_reads_its_folder_and_what_it_imports_as_every_model_hashed_together(tmp_path: Path) -> None:
    """A plan of one model lists only that model folder of a commit (the others are listed when asked about):
    its hash, a helper imported from another model's folder included, is the one hashing every model gives."""
    root = tmp_path / "repo"
    r = git.Repo.init(root)
    r.git.config("user.email", "t@example.com")
    r.git.config("user.name", "t")
    write(root, {
        **model_files("alpha", service="from models.beta.helper import f\nfrom common import x\nclass Svc: ...\n"),
        **model_files("beta"), "models/beta/helper.py": "import os\n", "models/README.md": "models\n",
        **model_files("gamma", md5="c" * 32), "common/__init__.py": "x = 1\n", "pipelines/requirements.lock": "a==1\n",
    })
    commit(r, "three models")
    every = model_hashes(root, "HEAD", [Entry(root, n) for n in ("alpha", "beta", "gamma")])
    for name in ("alpha", "beta", "gamma"):
        alone = model_hashes(root, "HEAD", [Entry(root, name)])[name]
        assert alone == every[name] and alone.inputs == every[name].inputs
    alpha = every["alpha"]
    assert alpha.kinds["models/beta/helper.py"] == "shared-code" and alpha.kinds["common/__init__.py"] == "shared-code"
    assert alpha.inputs["pipelines/requirements.lock"].startswith("blob:")
    missing = model_hashes(root, "HEAD", [Entry(root, "delta")])["delta"]  # a folder the commit does not have
    assert missing.inputs["models/delta/bentofile.yaml"] == "missing"


# imports at every depth, in every block that holds statements (an import inside an expression cannot be)
NESTED_IMPORTS = (b"import z\nclass C:\n    import y\n    def m(self):\n        try:\n            import x\n"
                  b"        except ImportError as e:\n            import w\n        else:\n            import v\n"
                  b"        finally:\n            import u\n"
                  b"async def g():\n    async with a:\n        import t\n    async for i in b:\n        import s\n"
                  b"    else:\n        import r\n"
                  b"match q:\n    case 1:\n        import p\n    case _:\n        from o import n\n"
                  b"while c:\n    import m\nelse:\n    import l\nwith d:\n    if e:\n        import k\n"
                  b"    elif f:\n        import j\n    else:\n        import i\nimport h\n"
                  b"try:\n    import g2\nexcept* ValueError:\n    import f2\n"
                  b"lam = lambda: __import__('not_an_import_statement')\n")


def test_imports_are_found_in_every_block_in_walk_order() -> None:
    """source/facts walks statements only (expressions never hold one): the records are ast.walk's, in its order."""
    import ast

    tree = ast.parse(NESTED_IMPORTS)
    expected = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            expected.extend((0, a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            expected.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    assert len(expected) == 19
    assert python_imports(NESTED_IMPORTS) == tuple(expected)


@pytest.mark.parametrize("source", [
    b"import os, numpy.linalg as la\nfrom . import sibling\nfrom ..pkg import x\nfrom torch import nn, *\n"
    b"def f():\n    import sklearn.svm\n    from pipelines.steps import train\n",
    b"if True:\n  from a.b import (c,\n    d)\n", b"def broken(:\n", b"", "x = '\xe9'\nimport caf\xe9\n".encode("latin-1"),
    NESTED_IMPORTS,
])
def test_one_parse_answers_the_lock_check_and_the_hash_as_their_own_parsers_do(source: bytes) -> None:
    """The catalog's lock check and the content hash share one parse per content (source/facts.py): each
    reads from it exactly what its own parser gives (pipelines.locks.imported_modules for the lock check)."""
    from pipelines.locks import imported_modules
    from reconciler.source.facts import absolute_imports

    assert absolute_imports(source) == imported_modules(source)
    assert absolute_imports(source) == absolute_imports(bytes(bytearray(source)))  # read back from the cache


def test_root_imports_resolved_once_per_pass_give_each_model_its_own_files(tmp_path: Path) -> None:
    """model_hashes resolves an import at the repository root once for all models (hash_model's `top_modules`):
    `from common import sub` in one model adds common/sub.py to that model only, never to a later model's
    plain `import common`; each hash equals the model hashed alone, at a commit and in the working tree."""
    root = tmp_path / "repo"
    r = git.Repo.init(root)
    r.git.config("user.email", "t@example.com")
    r.git.config("user.name", "t")
    write(root, {**model_files("alpha", service="from common import sub\nclass Svc: ...\n"),
                 **model_files("beta", service="import common\nclass Svc: ...\n"),
                 "common/__init__.py": "", "common/sub.py": "x = 1\n"})
    commit(r, "two models")
    for rev in ("HEAD", None):
        every = model_hashes(root, rev, [Entry(root, "alpha"), Entry(root, "beta")])
        assert "common/sub.py" in every["alpha"].inputs and "common/sub.py" not in every["beta"].inputs
        for name in ("alpha", "beta"):
            assert model_hashes(root, rev, [Entry(root, name)])[name] == every[name]
