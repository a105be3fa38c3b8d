"""Code the tests and the benchmarks share that is no part of the package: reference implementations to check
and time the package's models against."""
