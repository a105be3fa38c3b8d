"""Moved: ``RunOptions`` is ``mech_interp.models.run_options.RunOptions`` (the TransformerLens engine's options).
This name stays for one release so notebooks written against 0.1 keep working."""


def __getattr__(name: str):
    if name == "RunOptions":
        from ..models.run_options import RunOptions

        return RunOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
