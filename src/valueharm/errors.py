"""User-facing errors: one clear line naming what and where; the CLI prints it and exits non-zero."""


class ValueharmError(Exception):
    """An error the user can fix (bad file, bad config, unknown name, missing data)."""


class UnknownNameError(ValueharmError, KeyError):
    """A name not found in a registry or profile set; the message lists close matches or the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DataMissingError(ValueharmError):
    """A data file is absent from the data directory."""
