"""Shared test helpers: the installed console scripts of this environment."""

import sys
from pathlib import Path

BIN = Path(sys.executable).parent
HPO = str(BIN / "hpo")
OPTUNA = str(BIN / "optuna")
