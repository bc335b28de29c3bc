"""Exit codes that mean the same for every command (the table is in README.md, "Exit codes").

    0  ok: everything asked for was done
    1  failed: nothing was done (an environment error, an unreachable cluster, every model failed)
    2  usage: the command line itself is wrong (unknown option, conflicting options)
    3  partial or refused: some of it was done, the rest failed or was skipped (a model with errors,
       an environment left unwritten), or a safety check refused part of the work (a mass prune of
       an empty render, a protected kind without confirmation)

A script can tell "try again / fix the repository" (1, 3) from "fix the invocation" (2), and a
pipeline step that must apply everything fails on 3 as well as on 1.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3


def outcome(*, done: int, failed: int, refused: int = 0) -> ExitCode:
    """The exit code of a command that did `done` units (models, environments, objects) and failed
    `failed`, with `refused` safety refusals."""
    if failed == 0 and refused == 0:
        return ExitCode.OK
    if done == 0 and refused == 0:
        return ExitCode.FAILED
    return ExitCode.PARTIAL
