"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class CopyseekError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class ImageSkip(CopyseekError):
    """One image cannot be used; the run skips it and reports `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class IndexDamaged(CopyseekError):
    """A file of an index is missing or damaged. The message names the file and the fix (by default
    `copyseek repair INDEX`); the CLI prints it in one line and exits 2."""

    def __init__(self, problem: str, index: object, fix: str | None = None):
        self.problem = problem
        self.index = index
        super().__init__(f"{problem}; {fix or f'run: copyseek repair {index}'}")
