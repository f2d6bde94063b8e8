"""Errors a user can cause: the CLI prints the message on one line and exits with code 2."""


class UserError(Exception):
    """Something the user can fix; the message names the file/field and the fix."""

    exit_code = 2
