"""Layer 4, reading a study: reports, summaries, plots, evaluation on the test set, narrowing ranges."""
