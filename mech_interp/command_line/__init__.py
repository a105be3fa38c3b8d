"""What every command line shares: one-line errors and exit statuses, dataclass fields as flags, and the
experiment / study / batch subcommands built from the study registry. Imports no torch."""
