"""Argument checks shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def checked_out(path: str) -> Path:
    """``--out``, checked before a long run: its folder must exist or be creatable, and it must not be a folder."""
    out = Path(path)
    if out.is_dir():
        raise SystemExit(f"Error: --out {path} is a folder; give a .json file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"Error: --out {path}: cannot create its folder ({error.strerror or error})") from None
    return out
