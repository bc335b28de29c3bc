"""The one error of the pipeline steps: what could not be done, and the fix. Only the standard library (the
lock reader and the steps import it in step images and fresh per-model environments)."""

from __future__ import annotations


class StepError(Exception):
    """A step could not do its work (unknown model, missing input, quality gate failed, a bad lock)."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
