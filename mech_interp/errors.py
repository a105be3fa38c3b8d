"""The one exception type that means "the user asked for something that cannot be done"."""


class UsageError(ValueError):
    """Bad input from a user. The CLI prints ``str(err)`` as one line and exits with status 2."""


class NoMassiveActivations(UsageError):
    """The model shows no massive activation by the criterion, so there is nothing to intervene on."""
