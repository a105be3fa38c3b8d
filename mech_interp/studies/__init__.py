"""The language-model studies built on the core and the engine: ``lm`` (the paper's four experiments) and
``heads``. The engine finds them through ``runs.studies.STUDIES``; neither imports the other."""
