"""Commit signature verification, opt-in per watched repository (as Flux ``GitRepository.spec.verify``).

The trust root lives outside the repository (a file the operator names, e.g. a mounted Secret), never in
it: a commit cannot vouch for itself. Two kinds of keys, through ``git verify-commit``:

- GPG: an exported public keyring (``gpg --export --armor KEY...``). It is imported into a throwaway
  GNUPGHOME for each check, so the machine's own keyring plays no part.
- SSH: an allowed-signers file (``<principal> <key-type> <key>`` per line, as ``git config
  gpg.ssh.allowedSignersFile`` takes), checked by ``ssh-keygen -Y verify`` under git.

`verify_commit` returns the signer of a good signature and raises `SignatureError` otherwise, naming the
commit, the signer (or that there is none) and the fix. `classify` is the pure part (git's output ->
verdict) and is tested without keys.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import SignatureError, SourceError

TIMEOUT = 30.0  # seconds for one gpg / git verify-commit run


@dataclass(frozen=True)
class VerifyPolicy:
    """Which keys a commit must be signed with. Both None: verification is off."""

    gpg_keyring: Path | None = None
    ssh_allowed_signers: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.gpg_keyring is not None or self.ssh_allowed_signers is not None

    def describe(self) -> str:
        parts = ([f"GPG keyring {self.gpg_keyring}"] if self.gpg_keyring else []) + \
                ([f"SSH allowed signers {self.ssh_allowed_signers}"] if self.ssh_allowed_signers else [])
        return " and ".join(parts) or "no keys"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    kind: str  # "gpg", "ssh" or "none"
    signer: str  # key fingerprint / id and user id, or the SSH principal and key; "" when unknown
    reason: str  # "good", "unsigned", "unknown signer", "bad signature", "no trusted keys of this kind"


_GPG_GOOD = re.compile(r"^\[GNUPG:\] (?:GOODSIG|EXPSIG|EXPKEYSIG) (\S+) (.*)$", re.M)
_GPG_VALID = re.compile(r"^\[GNUPG:\] VALIDSIG (\S+)", re.M)
_GPG_NOKEY = re.compile(r"^\[GNUPG:\] (?:ERRSIG|NO_PUBKEY) (\S+)", re.M)
_GPG_BAD = re.compile(r"^\[GNUPG:\] BADSIG (\S+) (.*)$", re.M)
_GPG_ISSUER = re.compile(r"issuer fingerprint[^0-9A-F]*([0-9A-F]{16,40})|using \S+ key ([0-9A-F]{16,40})", re.I)
_SSH_GOOD = re.compile(r'Good "git" signature for (\S+) with (\S+) key (\S+)')
_SSH_KEY = re.compile(r"(?:with|using) (\S+) key (SHA256:\S+)")


def signature_kind(raw_commit: str) -> str:
    """'gpg', 'ssh' or 'none', from the commit object's gpgsig header. Pure."""
    header, _, _ = raw_commit.partition("\n\n")
    if "\ngpgsig " not in "\n" + header:
        return "none"
    return "ssh" if "-----BEGIN SSH SIGNATURE-----" in header else "gpg"


def classify(kind: str, returncode: int, output: str) -> Verdict:
    """git verify-commit's exit code and output (status lines on stderr with --raw) -> a verdict. Pure."""
    if kind == "none":
        return Verdict(False, "none", "", "unsigned")
    if kind == "gpg":
        good, valid = _GPG_GOOD.search(output), _GPG_VALID.search(output)
        if returncode == 0 and good:
            return Verdict(True, "gpg", f"{valid.group(1) if valid else good.group(1)} ({good.group(2).strip()})", "good")
        bad = _GPG_BAD.search(output)
        if bad:
            return Verdict(False, "gpg", f"{bad.group(1)} ({bad.group(2).strip()})", "bad signature")
        nokey = _GPG_NOKEY.search(output)
        issuer = _GPG_ISSUER.search(output)
        signer = nokey.group(1) if nokey else (next(g for g in issuer.groups() if g) if issuer else "")
        return Verdict(False, "gpg", signer, "unknown signer")
    good = _SSH_GOOD.search(output)
    if returncode == 0 and good:
        return Verdict(True, "ssh", f"{good.group(1)} ({good.group(2)} {good.group(3)})", "good")
    key = _SSH_KEY.search(output)
    signer = f"{key.group(1)} key {key.group(2)}" if key else ""
    reason = "bad signature" if "Signature verification failed" in output or "incorrect signature" in output \
        else "unknown signer"
    return Verdict(False, "ssh", signer, reason)


def verify_commit(root: Path, commit: str, policy: VerifyPolicy) -> Verdict:
    """The verdict for `commit` of the repository at `root`; raises SignatureError unless it is good."""
    raw = _git(root, ["cat-file", "commit", commit], env=None).stdout
    kind = signature_kind(raw)
    if kind == "none":
        raise _refusal(commit, classify("none", 1, ""), policy)
    keys = policy.gpg_keyring if kind == "gpg" else policy.ssh_allowed_signers
    if keys is None:
        raise _refusal(commit, Verdict(False, kind, "", f"no trusted {kind.upper()} keys configured"), policy)
    if not Path(keys).is_file():
        raise SignatureError(f"cannot verify commit {commit[:12]}: the trusted keys file {keys} does not exist",
                             fix="mount the keyring or allowed-signers file there, or fix the path given to "
                                 "--verify-gpg-keyring / --verify-ssh-allowed-signers")
    if kind == "ssh":
        proc = _git(root, ["-c", f"gpg.ssh.allowedSignersFile={Path(keys).resolve()}", "verify-commit", "--raw", commit],
                    env=None, check=False)
        verdict = classify("ssh", proc.returncode, proc.stdout + proc.stderr)
    else:
        with _gnupg_home(Path(keys)) as home:
            proc = _git(root, ["-c", "gpg.program=gpg", "verify-commit", "--raw", commit],
                        env={"GNUPGHOME": str(home)}, check=False)
        verdict = classify("gpg", proc.returncode, proc.stdout + proc.stderr)
    if not verdict.ok:
        raise _refusal(commit, verdict, policy)
    return verdict


def _refusal(commit: str, verdict: Verdict, policy: VerifyPolicy) -> SignatureError:
    who = {"unsigned": "it has no signature"}.get(
        verdict.reason, f"{verdict.kind.upper()} signature by {verdict.signer or 'an unknown key'}: {verdict.reason}")
    return SignatureError(
        f"refusing commit {commit[:12]}: {who} (trusted: {policy.describe()})",
        fix="sign the commit with a trusted key (`git commit -S`, or gpg.format=ssh for SSH keys) and push it; if "
            "the signer is legitimate, add their public key to the trusted keys file. The last verified commit "
            "stays applied")


def _git(root: Path, args: list[str], *, env: dict[str, str] | None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, errors="replace",
                              timeout=TIMEOUT, env=full_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SignatureError(f"git {args[-2] if len(args) > 1 else args[0]} timed out after {TIMEOUT:.0f} s",
                             fix="check gpg / ssh-keygen are installed and do not wait for input") from None
    except OSError as exc:
        raise SourceError(f"cannot run git: {exc}", fix="install git") from None
    if check and proc.returncode != 0:
        raise SourceError(f"git {' '.join(args)} failed: {proc.stderr.strip()[:500]}",
                          fix="fetch the commit first, or name one that exists")
    return proc


class _gnupg_home:
    """A throwaway GNUPGHOME holding only the trusted keyring (the agent it may start is stopped after)."""

    def __init__(self, keyring: Path) -> None:
        self.keyring = keyring

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="gnupg-"))  # short: gpg's socket paths have a length limit
        self.path.chmod(0o700)
        try:
            proc = subprocess.run(["gpg", "--batch", "--quiet", "--no-tty", "--import", str(self.keyring)],
                                  capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                                  env={**os.environ, "GNUPGHOME": str(self.path)}, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.__exit__()
            raise SignatureError(f"cannot import the GPG keyring {self.keyring}: {exc}",
                                 fix="install gnupg (Debian: apt-get install gnupg)") from None
        if proc.returncode != 0:
            self.__exit__()
            raise SignatureError(f"cannot import the GPG keyring {self.keyring}: {proc.stderr.strip()[:500]}",
                                 fix="export it with `gpg --export --armor KEYID... > keyring.asc`")
        return self.path

    def __exit__(self, *exc: object) -> None:
        if shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(self.path)},
                           capture_output=True, timeout=TIMEOUT, check=False)
        shutil.rmtree(self.path, ignore_errors=True)
