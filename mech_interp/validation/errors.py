"""The exception types that mean "the user asked for something that cannot be done"."""


class UsageError(ValueError):
    """Bad input from a user. The CLI prints ``str(err)`` as one line and exits with status 2."""


class NothingToMeasure(UsageError):
    """An experiment cannot say anything about this model or data; a study goes on with the others."""


class NoMassiveActivations(NothingToMeasure):
    """The model shows no massive activation by the criterion, so there is nothing to intervene on."""


def first_sentence(text: str, limit: int = 200) -> str:
    """``text`` on one line, up to its first sentence's end, at most ``limit`` characters."""
    return " ".join(text.split()).split(". ")[0].rstrip(".")[:limit]


def reason(err: BaseException, limit: int = 200) -> str:
    """``Type: first sentence`` of a library's error, for quoting inside a one-line refusal (their messages span
    lines, and some go on with advice that does not apply, or quote whole files)."""
    text = first_sentence(str(err), limit)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
