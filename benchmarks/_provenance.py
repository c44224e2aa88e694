"""Shared helper of the benchmarks: where and on what code a figure was measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def commit(paths: tuple[str, ...] = ("src", "benchmarks", "configs")) -> str:
    """``git rev-parse --short HEAD``, with ``+changes`` when ``paths`` differ from it (the
    run measured uncommitted code), or ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def load() -> float:
    """The one-minute load average (above the core count, timings are contaminated)."""
    return round(os.getloadavg()[0], 2)
