"""Files and places the package reads and writes: users' files within limits, tensor files without pickle,
atomic files and scratch paths, the conversion cache, the Hugging Face hub's reachability."""
