"""The port API's one exception: `PortError`, a port or an argument that does not fit (one line: what was given,
what was expected). Its own module so that every other module, the tree helpers included, can raise it."""

from common.errors import SeqMnistError


class PortError(SeqMnistError):
    """A port's declaration does not fit its models (one line: which entry, what was expected)."""
