"""Where comfy-drive's files are: what it ships (read-only) and what belongs to the user.

Shipped, read from the package `comfy_driver.data`, the folder beside this module (the folder
importlib.resources names for an installed or editable package, without its 10 ms of imports at every
start): the node catalogues, `workflows/`, `backends.yaml`, `models.lock` and `examples/`. In the
repository the last four stay at the top level; `comfy_driver/data` holds symbolic links to them,
which a wheel build copies in as plain files, so a checkout (`pip install -e .`) and an installed
wheel read the same names.

Nothing is ever written into the installed package. The user's own files live in the user config
folder (`$XDG_CONFIG_HOME/comfy-drive`, else `~/.config/comfy-drive`; `COMFY_DRIVE_CONFIG` overrides):
its `models.lock`, once present (the first pin or `lock add` copies the shipped one there), is the one
every command reads unless `--lock` names another.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).parent / "data"
WORKFLOWS = DATA / "workflows"
MODELS_LOCK = DATA / "models.lock"  # the shipped one
BACKENDS = DATA / "backends.yaml"
EXAMPLES = DATA / "examples"


def config_dir() -> Path:
    """The user's comfy-drive settings folder (credentials, their own models.lock)."""
    if os.environ.get("COMFY_DRIVE_CONFIG"):
        return Path(os.environ["COMFY_DRIVE_CONFIG"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "comfy-drive"


def user_lock() -> Path:
    return config_dir() / "models.lock"


def models_lock() -> Path:
    """The models.lock in force: the user's own when there is one, else the shipped one."""
    own = user_lock()
    return own if own.is_file() else MODELS_LOCK


def is_shipped(path: Path) -> bool:
    """Whether `path` is a file of the installed package (never to be written)."""
    return Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(DATA)))
