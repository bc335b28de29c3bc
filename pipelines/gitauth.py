"""Git push credentials from a mounted Secret: how the register step pushes its proposal branch.

The environment names a Secret (environment.yaml `pipelines.gitCredentialsSecret`). The train workflow
mounts it read-only at MOUNT_PATH in the register step's pod, and in no other step, and points
CREDENTIALS_ENV at it; the local runner takes the same folder (`--git-credentials DIR` or the same
variable), so a laptop and the pod push through this one code path. The Secret's keys:

    token           an https token that may push branches (GitHub: a fine-grained token or an App
                    installation token with contents: write; pull-requests: write also opens the PR)
    username        optional, with `token`; default x-access-token (what GitHub expects with a token)
    ssh-privatekey  an SSH deploy key with write access (the key name of type kubernetes.io/ssh-auth)
    known_hosts     required with ssh-privatekey: the host keys to trust (host key checking stays strict)

The secret values never reach a command line, the environment, git's config, a remote URL or a log:
git gets GIT_ASKPASS, a script in a private temporary folder that prints the mounted file when git asks,
or GIT_SSH_COMMAND naming a private copy of the key. Other credential helpers are switched off for the
push, so no helper stores the token. Standard library only (the step image has no project install).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

CREDENTIALS_ENV = "GITOPS_GIT_CREDENTIALS"  # the folder holding the Secret's keys (the mount, or a local folder)
MOUNT_PATH = "/etc/gitops-ml/git"  # where the register step mounts the environment's git credentials Secret
TOKEN, USERNAME, SSH_KEY, KNOWN_HOSTS = "token", "username", "ssh-privatekey", "known_hosts"
DEFAULT_USERNAME = "x-access-token"
MAX_FILE_BYTES = 64 * 1024


class CredentialsError(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


def transport(url: str) -> str:
    """'https', 'http', 'ssh' (ssh://, git@host:path) or 'local' (a path, file://) for a remote URL."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        scheme = url.split("://", 1)[0].lower()
        return {"https": "https", "http": "http", "ssh": "ssh", "git+ssh": "ssh", "ssh+git": "ssh"}.get(scheme, "local")
    if re.match(r"^[^/\s:]+@[^/\s:]+:", url) or re.match(r"^[A-Za-z0-9.-]+:(?!//)", url) and not os.path.exists(url):
        return "ssh"  # scp-like syntax: [user@]host:path
    return "local"


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _readable(folder: Path, name: str) -> Path | None:
    path = folder / name
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CredentialsError(f"{path} is larger than {MAX_FILE_BYTES} bytes",
                                   fix=f"the Secret's {name!r} key holds one credential, not a file collection")
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}", fix="check the Secret's mount and permissions") from None
    return path


def _private_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gitops-git-"))  # mode 0700: only this user reads what is inside


@contextlib.contextmanager
def git_environment(remote_url: str, folder: str | os.PathLike | None = None) -> Iterator[dict[str, str]]:
    """Extra environment for `git push` to `remote_url` with the credentials in `folder` (default: $CREDENTIALS_ENV).

    No folder: git's own configuration applies (a local bare remote, a developer's credential helper), but
    never a terminal prompt: a push that needs credentials fails instead of hanging.
    Raises CredentialsError when the folder does not hold what the remote's transport needs.
    """
    folder = folder or os.environ.get(CREDENTIALS_ENV) or None
    if folder is None:
        yield {"GIT_TERMINAL_PROMPT": "0"}
        return
    root = Path(folder)
    if not root.is_dir():
        raise CredentialsError(f"git credentials folder {root} does not exist",
                               fix=f"mount the Secret named by pipelines.gitCredentialsSecret there, or unset {CREDENTIALS_ENV}")
    kind = transport(remote_url)
    tmp = _private_dir()
    try:
        env = {"GIT_TERMINAL_PROMPT": "0",
               # `credential.helper=` (empty) clears every configured helper: none may store the token
               "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper", "GIT_CONFIG_VALUE_0": ""}
        if kind in ("https", "http"):
            token = _readable(root, TOKEN)
            if token is None:
                raise CredentialsError(f"the remote is {kind} but {root} has no {TOKEN!r} file",
                                       fix=f"add a `{TOKEN}` key (a token that may push) to the git credentials Secret, "
                                           f"or use an ssh remote with `{SSH_KEY}` and `{KNOWN_HOSTS}`")
            if kind == "http" and not _loopback(remote_url):
                raise CredentialsError("refusing to send the git token over plain http to a non-loopback host",
                                       fix="use the repository's https URL as the remote")
            username = _readable(root, USERNAME)
            askpass = tmp / "askpass"
            user_cmd = f"cat {shlex.quote(str(username))}" if username else f"echo {DEFAULT_USERNAME}"
            askpass.write_text("#!/bin/sh\n# git's askpass: answers from the mounted Secret's files\n"
                               f'case "$1" in\n  Username*) {user_cmd} ;;\n'
                               f"  *) cat {shlex.quote(str(token))} ;;\nesac\n")
            askpass.chmod(stat.S_IRWXU)
            env["GIT_ASKPASS"] = str(askpass)
        elif kind == "ssh":
            key, known = _readable(root, SSH_KEY), _readable(root, KNOWN_HOSTS)
            if key is None or known is None:
                raise CredentialsError(f"the remote is ssh but {root} lacks {SSH_KEY!r} or {KNOWN_HOSTS!r}",
                                       fix=f"put the deploy key under `{SSH_KEY}` and the host's keys under `{KNOWN_HOSTS}` "
                                           "(`ssh-keyscan github.com`) in the git credentials Secret")
            private = tmp / "id"  # ssh refuses a key others may read: a 0600 copy, whatever the mount's mode
            shutil.copyfile(key, private)
            private.chmod(stat.S_IRUSR | stat.S_IWUSR)
            env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(private))} -o IdentitiesOnly=yes -o BatchMode=yes "
                                      f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(known))}")
        yield env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def token(folder: str | os.PathLike | None = None) -> str | None:
    """The mounted https token (to open the pull request with the same credential), or None."""
    folder = folder or os.environ.get(CREDENTIALS_ENV) or None
    path = _readable(Path(folder), TOKEN) if folder else None
    return path.read_text(encoding="utf-8").strip() or None if path else None
