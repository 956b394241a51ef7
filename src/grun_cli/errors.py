"""The one exception type users see: a cause and a fix, printed as a single line by the CLI."""


class GrunError(Exception):
    """A user-facing error (bad option, missing file, empty split, NaN loss...).

    The message must name the cause and the fix; the CLI prints it without a traceback
    and exits with status 2.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message ("" when it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
