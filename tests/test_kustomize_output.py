"""kustomize's output reads the same through yaml-rs (the fast path) as through PyYAML, on kustomize's own output."""

from __future__ import annotations

import json
import random

import yaml

from reconciler.render import kustomize

TRICKY = ["yes", "no", "on", "off", "y", "n", "Y", "NO", "true", "False", "null", "~", "", " ", "017", "0o17", "0x1F",
          "0b101", "1_000", "1e3", "1E-3", "+1", "-.5", ".5", "1.", ".inf", "-.Inf", ".nan", "10:30", "1:2:3",
          "2001-12-14", "2001-12-14T21:59:43.10-05:00", "=", "<<", "#x", "a #b", "a: b", "- a", "[a]", "{a}",
          "&a", "*a", "!a", "|", ">", "'", '"', "\\", "é", "\u2028", "a\nb", "a\n", "  lead", "trail  ", "%x",
          "@x", "`x", "12345678901234567890", "1e-06", "0", "00", "-0", "3.14", "x=y", "500m", "1Gi"]
NUMBERS = [0, 1, -1, 7, 2**31, 2**63 - 1, 12345678901234567890, 1.5, -0.25, 1e-06, 1e21, 1000000.0, 0.1]


# what the fast path must read like PyYAML: ambiguous strings (kustomize quotes them), decimals, words
CLEAN_STRINGS = [t for t in TRICKY if "\n" not in t] + ["model-0007", "registry.test/m:0123abc", "http://x/#y"]
CLEAN_NUMBERS = [0, 1, -1, 7, 2**31, 2**63 - 1, 1.5, -0.25, 0.1, 3000]


def _value(rng, depth=0, clean=False):
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return {rng.choice(TRICKY) or "k": _value(rng, depth + 1, clean) for _ in range(rng.randint(0, 3))}
    if depth < 3 and roll < 0.25:
        return [_value(rng, depth + 1, clean) for _ in range(rng.randint(0, 3))]
    if roll < 0.35:
        return rng.choice(CLEAN_NUMBERS if clean else NUMBERS)
    if roll < 0.4:
        return rng.choice([True, False, None])
    if roll < 0.7 or clean:
        return rng.choice(CLEAN_STRINGS if clean else TRICKY)
    return "".join(rng.choice("ab01 .:+-_eE~<=yn#'\"\\\n") for _ in range(rng.randint(0, 6)))


def _kustomize(tmp_path, objects):
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "objects.yaml").write_text("".join("---\n" + json.dumps(o) + "\n" for o in objects))
    (folder / "kustomization.yaml").write_text("resources: [objects.yaml]\nnamespace: ns\n")
    return kustomize.run_kustomize(folder, timeout=120)


def _pyyaml(text):
    return [d for d in yaml.load_all(text, Loader=kustomize.SAFE_LOADER) if d]


def test_random_values_read_the_same_through_both_readers(tmp_path):
    rng = random.Random(2026)
    objects = [{"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": f"t{i}"},
                "spec": {f"f{j}": _value(rng, clean=i % 2 == 0) for j in range(8)}} for i in range(300)]
    text = _kustomize(tmp_path, objects)
    # document by document (one unreadable by PyYAML, like a plain `=`, would stop the whole stream)
    docs = [d if d.endswith("\n") else d + "\n" for d in text.split("\n---\n")]
    compared = fast = 0
    for doc in docs:
        try:
            expected = _pyyaml(doc)
        except yaml.YAMLError:
            continue
        assert kustomize.parse_output(doc) == expected, doc
        compared += 1
        fast += not kustomize._readers_may_differ(doc)
    assert compared > 200 and 50 < fast < compared  # both paths ran


def test_a_stream_without_its_final_newline_is_read_by_pyyaml():
    assert kustomize.parse_output("a: |\n  x") == [{"a": "x"}] == _pyyaml("a: |\n  x")


def test_exponent_floats_keep_the_reading_they_always_had(tmp_path):
    text = _kustomize(tmp_path, [{"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"},
                                  "spec": {"small": 0.000001, "quoted": "1e-06", "on": "yes", "octal": "017"}}])
    assert "small: 1e-06" in text  # Go prints the float plainly
    (doc,) = kustomize.parse_output(text)
    assert doc["spec"] == {"small": "1e-06", "quoted": "1e-06", "on": "yes", "octal": "017"} == _pyyaml(text)[0]["spec"]


def test_rendered_models_take_the_fast_path(template_repo, tmp_path, monkeypatch):
    from reconciler.catalog.load import load_catalog
    from reconciler.render.environment import render_environment

    outputs = []
    real = kustomize.run_kustomize
    monkeypatch.setattr(kustomize, "run_kustomize", lambda *a, **k: outputs.append(real(*a, **k)) or outputs[-1])
    catalog = load_catalog(template_repo)
    result = render_environment(catalog, "prod", images={m: f"r.example.com/{m}:1" for m in catalog.models})
    assert result.errors == {} and outputs
    for text in outputs:
        assert not kustomize._readers_may_differ(text)
        assert kustomize.parse_output(text) == _pyyaml(text)


def test_the_token_scan_finds_what_the_yaml_1_1_pattern_finds():
    """_readers_may_differ looks for a plain `=` / `<<` token from each `=` and `<<` (and for `|+` on its own): on any
    text it answers what the one regex _DIFFERS_IN_YAML_1_1 answers (random texts of the characters that matter)."""
    rng = random.Random(25)
    alphabet = ["=", "<<", "<", " ", "\t", "\n", ":", "[", "{", ",", "]", "}", "a", "|", ">", "+", "2", "\x85", "\xa0",
                "\r", "-", "#"]
    hits = 0
    for _ in range(100_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        expected = bool(kustomize._DIFFERS_IN_YAML_1_1.search(text))
        found = bool(("+" in text and kustomize._KEEP_CHOMPING.search(text))
                     or kustomize._plain_merge_or_value_token(text))
        assert found == expected, repr(text)
        hits += expected
    assert 1_000 < hits < 99_000
