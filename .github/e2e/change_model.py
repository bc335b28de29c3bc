"""Change a model the way a data scientist's commit would, for the e2e canary job.

    python .github/e2e/change_model.py good models/iris-classifier
        a harmless code change (a comment in service.py): a new content hash, so a new image and a canary
    python .github/e2e/change_model.py broken models/iris-classifier --error-rate 0.5
        a broken release: the first @bentoml.api method raises on that share of requests (HTTP 500)
    python .github/e2e/change_model.py slow models/iris-classifier --delay-ms 300
        a slower release: the first @bentoml.api method sleeps that long before answering

The edit is to the model's real service code, so the broken version is built, pushed and rolled out
exactly as a bad merge would be; nothing in the reconciler knows about it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

API = re.compile(r"^(?P<indent>[ \t]*)@bentoml\.api\b")
DEF = re.compile(r"^(?P<indent>[ \t]*)(async\s+)?def\s+(?P<name>\w+)\s*\(")
MARK = "# e2e fault injection"


class ChangeError(Exception):
    pass


def service_file(model_dir: Path) -> Path:
    """The model's service module, from model.yaml's `service: file.py:Class`."""
    spec = (model_dir / "model.yaml").read_text(encoding="utf-8")
    match = re.search(r"^service:\s*['\"]?([^:'\"\s]+\.py):", spec, re.MULTILINE)
    if not match:
        raise ChangeError(f"{model_dir}/model.yaml has no `service: <file>.py:<Class>`")
    return model_dir / match.group(1)


def good(source: str, label: str) -> str:
    return source.rstrip("\n") + f"\n# e2e change: {label}\n"


def broken(source: str, error_rate: float) -> str:
    """Insert `if random.random() < rate: raise` as the first statement of the first API method."""
    if not 0 < error_rate <= 1:
        raise ChangeError(f"--error-rate {error_rate} is not in (0, 1]")
    return _inject(source, lambda body: (
        f"{body}import random  {MARK}\n"
        f"{body}if random.random() < {error_rate!r}:  {MARK}\n"
        f"{body}    raise RuntimeError('injected fault: the e2e broken release')  {MARK}\n"))


def slow(source: str, delay_ms: float) -> str:
    """Insert `time.sleep(delay)` as the first statement of the first API method."""
    if not 0 < delay_ms <= 60_000:
        raise ChangeError(f"--delay-ms {delay_ms} is not in (0, 60000]")
    return _inject(source, lambda body: (
        f"{body}import time  {MARK}\n"
        f"{body}time.sleep({delay_ms / 1000.0!r})  {MARK}\n"))


def _inject(source: str, fault_lines) -> str:
    """Insert `fault_lines(indent)` as the first statement of the first @bentoml.api method."""
    if MARK in source:
        raise ChangeError("the service already has an injected fault")
    lines = source.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not API.match(line):
            continue
        for j in range(i + 1, len(lines)):
            d = DEF.match(lines[j])
            if d is None:
                continue
            # the signature ends at the first line ending with ':' (it may span lines)
            end = next((k for k in range(j, len(lines)) if lines[k].rstrip().endswith(":")), None)
            if end is None:
                raise ChangeError(f"the signature of {d.group('name')} does not end")
            fault = fault_lines(d.group("indent") + "    ")
            return "".join(lines[: end + 1]) + fault + "".join(lines[end + 1:])
    raise ChangeError("no @bentoml.api method found in the service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("change", choices=["good", "broken", "slow"])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--error-rate", type=float, default=0.5)
    parser.add_argument("--delay-ms", type=float, default=300.0)
    parser.add_argument("--label", default="a new version")
    args = parser.parse_args(argv)
    try:
        path = service_file(args.model_dir)
        text = path.read_text(encoding="utf-8")
        if args.change == "good":
            new = good(text, args.label)
        elif args.change == "broken":
            new = broken(text, args.error_rate)
        else:
            new = slow(text, args.delay_ms)
        compile(new, str(path), "exec")
    except (ChangeError, OSError, SyntaxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path.write_text(new, encoding="utf-8")
    print(f"{args.change} change written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
