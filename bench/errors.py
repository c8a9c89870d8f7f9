"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """A bad value from the user (argument, file, schedule...). The message names it and what is allowed."""
