"""One error type for everything a user can fix: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input or configuration. The message names the file or key and what to do."""

    exit_code = 2
