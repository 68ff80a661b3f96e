"""What goes wrong with state files, as one sentence that names the file.

Every reader and writer of the state raises these (never a bare JSONDecodeError
or KeyError), so the CLI can print one sentence and `run` can exit 3. The file
is named relative to the state folder, the way `forgesyte fsck` reports it.
"""

from __future__ import annotations

REPAIR_HINT = "run `forgesyte fsck --repair`"


class StateError(Exception):
    """A state file cannot be used as it is.

    `name` is the file relative to the state folder; `problem` says what is
    wrong with it in a few words ("is damaged (checksum mismatch)").
    """

    def __init__(self, name: str, problem: str, hint: str = REPAIR_HINT):
        self.name = name
        self.problem = problem
        self.hint = hint
        super().__init__(f"The state file {name} {problem}; {hint}." if hint else
                         f"The state file {name} {problem}.")


class StateDamaged(StateError):
    """Missing, truncated, garbled, or inconsistent with the rest of the state."""


class UnknownFormat(StateError):
    """Written by another version of ForgeSyte (or not ForgeSyte's at all)."""

    def __init__(self, name: str, problem: str):
        super().__init__(name, problem, "this ForgeSyte will not guess at it; use the version that wrote "
                         "it, or move the state folder aside")
