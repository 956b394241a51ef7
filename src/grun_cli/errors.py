"""The one exception type users see: a cause and a fix, printed as a single line by the CLI."""


class GrunError(Exception):
    """A user-facing error (bad option, missing file, empty split, NaN loss...).

    The message must name the cause and the fix; the CLI prints it without a traceback
    and exits with status 2.
    """
