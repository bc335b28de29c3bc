"""Commit signature verification with GPG and SSH keys made here, on the real API server.

Keys: alice (GPG) and bob (SSH) are trusted; mallory (GPG) and eve (SSH) sign too, but are not trusted.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.errors import SignatureError
from reconciler.source.verify import VerifyPolicy, classify, signature_kind, verify_commit

@dataclass
class Keys:
    gnupghome: Path  # holds the secret GPG keys, for signing only
    gpg: dict[str, str]  # name -> fingerprint
    ssh: dict[str, Path]  # name -> private key file
    policy: VerifyPolicy  # alice's public keyring + bob in the allowed signers


def _gpg(home: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["gpg", "--batch", "--quiet", "--no-tty", *args], input=stdin, capture_output=True,
                          text=True, check=True, env={**os.environ, "GNUPGHOME": str(home)}).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    tmp = tmp_path_factory.mktemp("keys")
    home = Path(tmp_path_factory.mktemp("gh"))
    home.chmod(0o700)
    gpg = {}
    for name in ("alice", "mallory"):
        _gpg(home, "--gen-key", stdin=f"%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nName-Real: {name}\n"
                                      f"Name-Email: {name}@example.com\nExpire-Date: 0\n%commit\n")
        listing = _gpg(home, "--with-colons", "--list-keys", f"{name}@example.com")
        gpg[name] = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    keyring = tmp / "trusted.asc"
    keyring.write_text(_gpg(home, "--armor", "--export", gpg["alice"]))
    ssh = {}
    for name in ("bob", "eve"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp / name)], check=True)
        ssh[name] = tmp / name
    allowed = tmp / "allowed_signers"
    allowed.write_text("bob@example.com " + " ".join((tmp / "bob.pub").read_text().split()[:2]) + "\n")
    yield Keys(home, gpg, ssh, VerifyPolicy(keyring, allowed))
    subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)


def commit(root: Path, keys: Keys, signer: str | None, message: str, change=None) -> str:
    """Commit every change in `root` (or an empty commit), signed by `signer` (None: unsigned)."""
    if change is not None:
        change(root)
    args = ["git", "-C", str(root)]
    if signer in keys.gpg:
        args += ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={keys.gpg[signer]}"]
    elif signer in keys.ssh:
        args += ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys.ssh[signer]}"]
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*args, "commit", "-q", "--allow-empty", "-m", message, *(["-S"] if signer else ["--no-gpg-sign"])],
                   check=True, env={**os.environ, "GNUPGHOME": str(keys.gnupghome)})
    return git.Repo(root).head.commit.hexsha


# -- pure ----------------------------------------------------------------------------------------

def test_classify_reads_git_and_gpg_status_lines():
    assert signature_kind("tree t\nauthor a\n\nmessage\ngpgsig in the body\n") == "none"
    assert signature_kind("tree t\ngpgsig -----BEGIN SSH SIGNATURE-----\n x\n\nm") == "ssh"
    assert signature_kind("tree t\ngpgsig -----BEGIN PGP SIGNATURE-----\n x\n\nm") == "gpg"
    good = "[GNUPG:] GOODSIG 8E5B8A0A1A203400 Alice <a@x>\n[GNUPG:] VALIDSIG F8D89C772B75A6480B367BFC8E5B8A0A1A203400 x\n"
    assert classify("gpg", 0, good).signer.startswith("F8D89C772B75A6480B367BFC8E5B8A0A1A203400 (Alice")
    assert classify("gpg", 1, "[GNUPG:] ERRSIG 1234ABCD 22 8 00 1 9\n[GNUPG:] NO_PUBKEY 1234ABCD\n").reason == \
        "unknown signer"
    assert classify("gpg", 1, "[GNUPG:] BADSIG 1234ABCD Alice <a@x>\n").reason == "bad signature"
    assert not classify("gpg", 1, good).ok  # git said no (e.g. gpg.minTrustLevel): never overridden
    assert classify("ssh", 1, "Signature verification failed: incorrect signature\n").reason == "bad signature"


# -- real keys, real git -----------------------------------------------------------------------------

def test_unsigned_and_unknown_signers_are_refused_for_gpg_and_ssh(template_repo, keys):
    verdicts = {}
    for signer in ("alice", "bob", None, "mallory", "eve"):
        sha = commit(template_repo, keys, signer, f"by {signer}")
        try:
            verdicts[signer] = verify_commit(template_repo, sha, keys.policy)
        except SignatureError as exc:
            verdicts[signer] = exc
            assert sha[:12] in str(exc) and "fix:" in str(exc)
    assert verdicts["alice"].ok and verdicts["alice"].kind == "gpg" and keys.gpg["alice"] in verdicts["alice"].signer
    assert verdicts["bob"].ok and verdicts["bob"].kind == "ssh" and "bob@example.com" in verdicts["bob"].signer
    assert "no signature" in str(verdicts[None])
    mallory = str(verdicts["mallory"])
    assert "GPG signature by" in mallory and keys.gpg["mallory"][-16:] in mallory and "unknown signer" in mallory
    eve_fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(keys.ssh["eve"]) + ".pub"], capture_output=True,
                                     text=True, check=True).stdout.split()[1]
    assert "SSH signature by" in str(verdicts["eve"]) and eve_fingerprint in str(verdicts["eve"])
    # only SSH keys trusted: a good GPG signature is still refused, and says why
    with pytest.raises(SignatureError, match="no trusted GPG keys"):
        verify_commit(template_repo, git.Repo(template_repo).commit("HEAD~4").hexsha,
                      VerifyPolicy(None, keys.policy.ssh_allowed_signers))


def sync(root: Path, keys: Keys, envtest, rev: str):
    return CliRunner().invoke(app, ["sync", "dev", "--repo", str(root), "--rev", rev, "--kubeconfig",
                                    str(envtest.kubeconfig), "--context", "envtest", "--format", "json",
                                    "--verify-gpg-keyring", str(keys.policy.gpg_keyring),
                                    "--verify-ssh-allowed-signers", str(keys.policy.ssh_allowed_signers)])


def deployments(envtest, namespace: str) -> dict[str, dict]:
    status, body = envtest.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")
    return {} if status == 404 else {d["metadata"]["name"]: d for d in body["items"]}


def test_sync_rev_applies_only_trusted_signatures(envtest, envtest_repo, keys):
    root, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    for signer in (None, "mallory", "eve"):
        sha = commit(root, keys, signer, f"by {signer}")
        refused = sync(root, keys, envtest, sha)
        assert refused.exit_code == 1, refused.output
        report = json.loads(refused.stdout)
        assert sha[:12] in report["error"] and "refusing commit" in report["error"]
        assert deployments(envtest, ns) == {}  # nothing of it reached the cluster
    for signer in ("alice", "bob"):
        sha = commit(root, keys, signer, f"by {signer}")
        applied = sync(root, keys, envtest, sha)
        report = json.loads(applied.stdout)
        assert "error" not in report or not report["error"], report
        assert report["commit"] == sha and deployments(envtest, ns)


def test_the_loop_keeps_the_last_verified_commit_applied(envtest, envtest_repo, keys, tmp_path):
    from reconciler.cluster.identity import Target
    from reconciler.run.loop import Reconciler, RunConfig
    from reconciler.run.record import load_record
    from reconciler.sync.engine import SyncOptions

    root, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    verified = commit(root, keys, "alice", "signed by alice")
    state_ns = ns  # the state ConfigMap beside the models: a fresh namespace per test
    kube = envtest.client()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": state_ns}})
    config = RunConfig(repo_url=str(root), branch="main", workdir=tmp_path / "mirror", environments=["dev"],
                       state_namespace=state_ns, identity="one", listen=None, lease_duration=30)
    reconciler = Reconciler(kube, config, SyncOptions(verify=keys.policy, target=Target("kind-dev", envtest.url)))
    (first,) = reconciler.tick()
    assert first.result.error is None and first.commit == verified, first.result.as_dict()

    def bump(root: Path) -> None:
        spec = root / "models/iris-classifier/model.yaml"
        spec.write_text(spec.read_text().replace("memory: 1Gi", "memory: 3Gi"))

    unsigned = commit(root, keys, None, "unsigned bump", change=bump)
    (refused,) = reconciler.tick()
    assert refused.commit == unsigned and "no signature" in str(refused.result.error)
    record = load_record(kube, "dev", state_ns)
    assert record.commit == verified and record.failure.commit == unsigned and unsigned[:12] in record.failure.error
    limits = lambda: deployments(envtest, ns)["iris-classifier-cpu-general"]["spec"]["template"]["spec"][  # noqa: E731
        "containers"][0]["resources"]["limits"]
    assert limits()["memory"] == "1Gi"  # the last verified commit stays applied

    resigned = commit(root, keys, "bob", "the same change, signed with bob's SSH key")
    (applied,) = reconciler.tick()
    assert applied.commit == resigned and applied.result.error is None, applied.result.as_dict()
    assert limits()["memory"] == "3Gi" and load_record(kube, "dev", state_ns).failure is None
