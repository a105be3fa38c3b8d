"""The series ``emergence`` measures when given none: the trainer's ``cpu`` preset (``default`` variant), exported
every 10 steps into ``results/train/cpu-series/default``, trained on first use.

The training is the trainer's own command, run as a child process (this study does not import the trainer; the
series is read as files, ``checkpoint_series``): the same command a user types (docs/studies/emergence.md), with its
progress, its resume after a kill, and its refusals. Once the directory holds the finished run, nothing is trained
again and the trainer is not started.

The series is named by its recipe (``TRAIN_ARGS``), not by its files' sizes and mtimes: they do not exist when a run
is resolved, and the recipe decides them (the trainer is seeded, and refuses to resume a directory trained with other
settings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ...validation.errors import UsageError

DEFAULT_SERIES = "results/train/cpu-series/default"  # relative to the working directory, as the trainer's --out
SERIES_INTERVAL = 10
TRAIN_ARGS = ["--preset", "cpu", "--variant", "default", "--series-interval", str(SERIES_INTERVAL)]


def train_command(series: str) -> list[str]:
    """The trainer's command line that makes (or resumes) the default series in ``series``."""
    return ["train-gpt2-bias", "train", *TRAIN_ARGS, "--out", series]


def recipe() -> dict[str, Any]:
    """What names the default series in a run's identity."""
    return {"out": DEFAULT_SERIES, "train": " ".join(train_command(DEFAULT_SERIES))}


def is_trained(series: str = DEFAULT_SERIES) -> bool:
    """Whether ``series`` holds a finished run of the trainer that exported a series (its manifest says so)."""
    manifest = Path(series) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        written = json.loads(manifest.read_text())
        return bool(written["summary"]["complete"]) and written["config"]["series_interval"] > 0
    except (ValueError, KeyError, TypeError):
        return False


def ensure_trained(series: str = DEFAULT_SERIES) -> None:
    """Train the default series unless it is trained: the trainer's command in a child process, its output shown."""
    if is_trained(series):
        return
    command = train_command(series)
    print(f"no --series or --models: training the default series first ({' '.join(command)}; minutes on a CPU; "
          "run again after a kill to resume)", flush=True)
    done = subprocess.run([sys.executable, "-m", "train_gpt2_bias", *command[1:]], check=False)
    if done.returncode == 2:  # the trainer refused (its line above): the user's to change, as any refusal
        raise UsageError("the default series cannot be trained here (train-gpt2-bias refused, above): give the "
                         "checkpoints with --series DIR or --models A,B,...")
    if done.returncode != 0:
        raise RuntimeError(f"training the default series failed (train-gpt2-bias exited with status "
                           f"{done.returncode}, above); run the same command again to resume it")
