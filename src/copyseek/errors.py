"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class CopyseekError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class ImageSkip(CopyseekError):
    """One image cannot be used; the run skips it and reports `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
