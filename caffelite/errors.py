"""The package's one exception type, so callers can catch caffelite's own errors."""


class CaffeliteError(Exception):
    """A user-facing error: bad prototxt, unknown layer, shape mismatch, bad file.

    The message names what the user needs to fix it: the file and line, the layer,
    the blob, what was expected and what was found.
    """
