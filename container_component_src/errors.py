"""The project's own error for a bad option value (the CLI prints it as one line, no traceback).

Its siblings: `storage.InputError` (an input file) and `config.ConfigError` (the settings).
Any other exception is a fault of the code or a library, and keeps its traceback.
"""


class OptionError(ValueError):
    """An option has a value the step cannot use; the message names the option."""
