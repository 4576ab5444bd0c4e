"""Layer 3, running a study: data, the objective, creating and resuming studies, workers, progress."""
