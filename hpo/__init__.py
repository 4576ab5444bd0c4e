"""The hyperparameter optimization service: study files, objective, storage and CLI."""
