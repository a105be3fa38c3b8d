"""The exception types that mean "the user asked for something that cannot be done"."""


class UsageError(ValueError):
    """Bad input from a user. The CLI prints ``str(err)`` as one line and exits with status 2."""


class NothingToMeasure(UsageError):
    """An experiment cannot say anything about this model or data; a study goes on with the others."""


class NoMassiveActivations(NothingToMeasure):
    """The model shows no massive activation by the criterion, so there is nothing to intervene on."""
