"""The cluster commands with the default `--repo .`, run from the repository root as a subprocess, the way a
user types them (found by the real-node e2e tier: `sync` read environments/<env>/environment.yaml relative
to its own folder and said "file not found")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RECONCILER = str(Path(sys.executable).with_name("reconciler"))


def test_sync_and_status_from_the_repository_root_with_the_default_repo(envtest, envtest_repo):
    common = ["--kubeconfig", str(envtest.kubeconfig), "--context", "envtest"]
    for args in (["sync", "dev", "--dry-run", *common], ["status", "dev", *common]):
        proc = subprocess.run([RECONCILER, *args], cwd=envtest_repo.root, capture_output=True, text=True, timeout=300)
        assert "file not found" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert proc.returncode == 0, proc.stdout + proc.stderr
