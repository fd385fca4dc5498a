"""comfy-drive: drive ComfyUI servers as a production line for short AI videos.

The public surface, everything a script needs (see the README's "Use from Python"):

- `Client(url)`: one ComfyUI server; `submit(workflow, sets=...)` queues an API graph, a GUI-saved
  workflow or a PNG / WebP / MP4 ComfyUI saved, and returns a `Job`: `events()` (typed: `Started`,
  `Cached`, `NodeStarted`, `StepProgress`, `Preview`, `NodeOutput`, `Finished`), `result(timeout)`,
  `cancel()`, `download(folder)`.
- `run_series(series.yaml, servers=..., on_event=...)`: a whole series, resumable; returns its report.
- `simulated_server()`: the built-in simulated ComfyUI, for trying all of this without a GPU.
- `Settings`: timeouts, retries, keepalive and TLS for every server.
- The exception tree, by cause, rooted at `DriveError` (drawn in `comfy_driver.errors`).

Everything else is internal and may change.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfy_driver.api import Client, run_series, simulated_server
    from comfy_driver.comfy.errors import (AccessRefused, ExecutionFailed, Interrupted, NotComfyUI, OutOfMemory,
                                           PromptLost, PromptRejected, ServerProtocolError, ServerUnreachable)
    from comfy_driver.comfy.job import (Cached, Cancelled, Finished, Job, JobEvent, NodeOutput, NodeStarted,
                                        Preview, Started, StepProgress)
    from comfy_driver.comfy.settings import Settings
    from comfy_driver.config.series import load_series
    from comfy_driver.errors import (BadInputFile, DriveError, JobTimeout, ModelVerificationFailed, RunError,
                                     UserError)
    from comfy_driver.pipeline.report import RunReport
    from comfy_driver.pipeline.control import RunControl, RunOptions, RunStopped

__version__ = "0.1.0"

# Imported on first use, so that `import comfy_driver` (and the command line's start) stays fast.
_HOMES = {
    "Client": "comfy_driver.api",
    "RunStopped": "comfy_driver.pipeline.control",
    "RunControl": "comfy_driver.pipeline.control",
    "run_series": "comfy_driver.api",
    "simulated_server": "comfy_driver.api",
    "AccessRefused": "comfy_driver.comfy.errors",
    "ExecutionFailed": "comfy_driver.comfy.errors",
    "Interrupted": "comfy_driver.comfy.errors",
    "NotComfyUI": "comfy_driver.comfy.errors",
    "OutOfMemory": "comfy_driver.comfy.errors",
    "PromptLost": "comfy_driver.comfy.errors",
    "PromptRejected": "comfy_driver.comfy.errors",
    "ServerProtocolError": "comfy_driver.comfy.errors",
    "ServerUnreachable": "comfy_driver.comfy.errors",
    "Cached": "comfy_driver.comfy.job",
    "Cancelled": "comfy_driver.comfy.job",
    "Finished": "comfy_driver.comfy.job",
    "Job": "comfy_driver.comfy.job",
    "JobEvent": "comfy_driver.comfy.job",
    "NodeOutput": "comfy_driver.comfy.job",
    "NodeStarted": "comfy_driver.comfy.job",
    "Preview": "comfy_driver.comfy.job",
    "Started": "comfy_driver.comfy.job",
    "StepProgress": "comfy_driver.comfy.job",
    "Settings": "comfy_driver.comfy.settings",
    "load_series": "comfy_driver.config.series",
    "BadInputFile": "comfy_driver.errors",
    "DriveError": "comfy_driver.errors",
    "JobTimeout": "comfy_driver.errors",
    "ModelVerificationFailed": "comfy_driver.errors",
    "RunError": "comfy_driver.errors",
    "UserError": "comfy_driver.errors",
    "RunReport": "comfy_driver.pipeline.report",
    "RunOptions": "comfy_driver.pipeline.control",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'comfy_driver' has no attribute {name!r}")

__all__ = [
    "AccessRefused", "BadInputFile", "Cached", "Cancelled", "Client", "DriveError", "ExecutionFailed", "Finished",
    "Interrupted", "Job", "JobEvent", "JobTimeout", "ModelVerificationFailed", "NodeOutput", "NodeStarted",
    "NotComfyUI", "OutOfMemory", "Preview", "PromptLost", "PromptRejected", "RunControl", "RunError", "RunOptions",
    "RunReport", "RunStopped", "ServerProtocolError", "ServerUnreachable", "Settings", "Started",
    "StepProgress", "UserError", "load_series", "run_series", "simulated_server", "__version__",
]
