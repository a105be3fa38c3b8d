"""The vision study's experiments, one module each, each ``run(session, config) -> ExperimentResult``."""
