"""Where the project's own files are: workflows, models.lock and backends.yaml at the repository root.

comfy-drive is installed from its checkout (`pip install -e .`), so these are found beside the package.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
MODELS_LOCK = ROOT / "models.lock"
BACKENDS = ROOT / "backends.yaml"
EXAMPLES = ROOT / "examples"
