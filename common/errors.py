"""The project's one exception type: every bad input surfaces as a one-line `SeqMnistError`."""


class SeqMnistError(Exception):
    """A user-facing error whose message is one line naming the value and what was expected."""


class ConfigError(SeqMnistError):
    """A flag or config value is invalid (command-line tools exit with code 2 for these).

    `field` names the Config field at fault, when one is, so that a command can name its flag instead.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
