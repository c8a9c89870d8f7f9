"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """A bad value from the user (argument, file, schedule...). The message names it and what is allowed."""


class WriteError(UsageError):
    """A run directory could not be written (disk full, file size limit): the run stops, --resume repairs it.

    A UsageError so that the CLI prints it on one line and exits 2; whatever was half written
    has been rolled back.
    """
