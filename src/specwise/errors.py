"""The one exception type for user mistakes: the CLI prints it as one line."""


class SpecwiseError(Exception):
    """A problem the user can fix (bad input, missing file); never a bug."""
