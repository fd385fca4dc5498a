"""The two kinds of failure the command line tells apart.

`UserError` means the input (a file, an argument, a server address) is wrong and the user must change
it: exit status 2. `RunError` means the run itself failed (a node crashed, the server went away):
exit status 1. Both carry one clear message; the CLI prints it without a traceback.
"""

from __future__ import annotations


class DriveError(Exception):
    """Base of every error comfy-drive reports to the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(DriveError):
    """Something the user gave us is wrong (file, field, argument): fix the input and rerun."""

    exit_code = 2


class RunError(DriveError):
    """The run failed for a reason outside the input (server, node crash, disk)."""

    exit_code = 1
