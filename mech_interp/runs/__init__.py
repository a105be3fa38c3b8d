"""Running experiments: options, the experiment registry, run directories, the runner, batches."""
