"""A from-scratch NumPy neural network: chapter 6 of "Deep Learning from Scratch".

This package knows nothing about Optuna; ``hpo`` adapts it.
"""
