"""The one exception type that means "the user asked for something we cannot do": the CLI prints its message
on one line and exits with code 2, without a traceback unless --debug is given."""


class UserError(Exception):
    pass


class CapabilityMissing(UserError):
    """A model cannot answer a kind of request (a server without prompt log-probabilities); the evaluator adds the
    task's name to the message."""
