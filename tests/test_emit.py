"""render.emit writes YAML that PyYAML (YAML 1.1) and kubectl's Go parser read back as the very data written."""

from __future__ import annotations

import subprocess

import git
import pytest
import yaml

from reconciler.desired.state import desired_at
from reconciler.render import emit
from reconciler.render.kustomize import kubectl_binary
from tests.conftest import commit_all, copy_template

HOSTILE = [
    "", " ", " leading", "trailing ", "a b", "yes", "No", "ON", "off", "y", "n", "True", "null", "NULL", "~", "-",
    "- item", "? key", ": x", "a: b", "a:", "a:b", "http://x.test/p?q=1#frag", "#comment", "a #b", "'single'",
    '"double"', "back\\slash", "tab\there", "new\nline", "cr\rx", "\x00nul", "\x07bell", "\x1bescape", "\x7fdel",
    "\x85nel", "\xa0nbsp", "\u2028ls", "\u2029ps", "\u202eRLO", "\u2066isolate", "\ufeffbom", "\ufffe", "emoji \U0001F600",
    "日本語", "0", "007", "0x1F", "1e3", "1.5", ".5", "+1", "-1", ".inf", ".NaN", "1:30", "2026-12-07", "=", "<<",
    "@at", "`tick", "!tag", "&anchor", "*alias", "|", ">", "%percent", "[a]", "{a: b}", "a,b", "a]b", "key=value",
    "a@b.c", "/predict", "_x", "x" * 300, "line1\nline2\n", "\t", "a\x85b", "42be9130ecb19a22f5d9", "0123456789ab",
    "1_000", "0o17", "0b101", "1.2.3", "12e", "1e+3", "0.", "190:20:30", "2026-12-07T10:00:00Z", "1/2",
]
VALUES = [0, -1, 10**20, 1.5, -0.0, 1e20, 1e-7, float("inf"), float("-inf"), True, False, None, [], {}, [[1, [2]], {}],
          {"k": []}, [{"a": 1, "b": [{"c": None}]}]]


def roundtrip_pyyaml(data):
    return list(yaml.safe_load_all(emit.dump_all(data)))


def test_hostile_strings_read_back_exactly():
    data = [{"s": s, s: "key", "list": [s, {"nested": s}]} for s in HOSTILE if s]
    data.append({"empty": "", "values": VALUES})
    assert roundtrip_pyyaml(data) == data


def test_the_output_has_no_raw_control_or_bidi_characters():
    text = emit.dump_all([{"s": s} for s in HOSTILE])
    assert not any(ch in text for ch in emit.BIDI | {"\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\r"})
    assert "\\u202E" in text  # shown, as an escape a person can read


def test_quoted_ascii_takes_the_short_path_with_the_same_escapes():
    """A printable-ASCII string with `"` or `\\` (a JSON annotation, a PromQL query) is escaped with two
    replaces, not character by character: the text is what the per-character escape writes, and it reads back."""
    samples = ['{"a":"b\\\\c"}', 'sum(x{m="a",p!~"/livez|/readyz"})', '\\', '"', 'a"b\\"c', '"' * 70 + "x"]
    for s in samples:
        slow = '"' + "".join(ch if emit._printable(ch) else emit._escape(ch) for ch in s) + '"'
        assert emit.scalar(s) == slow
        assert emit.scalar(s) == slow  # the second time from the memo (strings up to 64 characters)
        assert yaml.safe_load(emit.dump({s: s})) == {s: s}


def test_shas_and_tags_stay_plain_numbers_do_not():
    text = emit.dump({"sha": "42be9130ecb19a22f5d9", "tag": "0123456789ab", "octal": "007", "exp": "1e3"})
    assert "sha: 42be9130ecb19a22f5d9\n" in text and "tag: 0123456789ab\n" in text
    assert 'octal: "007"' in text and 'exp: "1e3"' in text


def test_nan_and_non_json_data():
    (back,) = roundtrip_pyyaml([{"x": float("nan")}])
    assert back["x"] != back["x"]
    for bad in ({"t": (1, 2)}, {1: "int key"}, {"d": object()}):
        with pytest.raises(TypeError):
            emit.dump(bad)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = copy_template(tmp_path_factory.mktemp("emit") / "repo")
    commit_all(git.Repo.init(root, initial_branch="main"), "template")
    state = desired_at(root, None)
    return [o for render in state.renders.values() for o in render.objects()]


def test_every_rendered_object_reads_back_with_pyyaml(rendered):
    assert len(rendered) > 10
    assert roundtrip_pyyaml(rendered) == rendered


def test_kustomizes_go_parser_reads_the_same_data(rendered, tmp_path):
    """The parser Argo CD, Flux and kubectl use (Go, kustomize's kyaml), not only PyYAML: kustomize reads the
    stream and writes it out again; what it wrote is the data sent. (Strings with C0/C1 control characters
    other than tab and newline, and U+FFFE, are left out: kustomize's own Go YAML round trip refuses them, whoever wrote
    the input: "yaml: control characters are not allowed".)"""
    go_safe = [s for s in HOSTILE if s and not any(ord(c) < 0x20 and c not in "\t\n" or 0x7F <= ord(c) <= 0x9F
                                                   or c in "\ufffe\uffff" for c in s)
               and s not in ("=", "<<")]  # Go writes these plain; YAML 1.1 (PyYAML reading it back) gives them tags
    data = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"hostile-{i}"},
             "data": {"value": s, "key-form": "x"}} for i, s in enumerate(go_safe)]
    key = lambda o: (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])  # noqa: E731
    data = list({key(o): o for o in [*data, *rendered]}.values())  # a shared PriorityClass once
    (tmp_path / "all.yaml").write_text(emit.dump_all(data), encoding="utf-8")
    (tmp_path / "kustomization.yaml").write_text("resources: [all.yaml]\n")
    done = subprocess.run([kubectl_binary(), "kustomize", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    back = {key(o): o for o in yaml.safe_load_all(done.stdout) if o}
    assert back == {key(o): o for o in data}
