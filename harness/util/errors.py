"""The one exception type users see.

Anything raised as `HarnessError` is a problem with the user's input or environment (a bad file,
a bad field, a missing model). The CLI prints each of its lines (one per problem) and exits with
code 2; every other exception is a bug: one line, exit code 3, and its traceback only with
`--debug`.
"""


class HarnessError(Exception):
    """A user-facing error: the message is one line that names the file, line or field."""
