"""The one exception type a user sees: a message that names the file and the problem."""


class LeFusionError(Exception):
    """An error the user can act on (bad input, wrong checkpoint, ...).

    The CLI prints its message on one line and exits non-zero; library callers can catch it.
    """
