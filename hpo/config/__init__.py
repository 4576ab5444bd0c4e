"""Layer 1, what a study is: the study file (spec), samplers and pruners by name (registry), study names."""
