"""The Python front door: `Client` (one server, one prompt at a time as a `Job`) and `run_series`.

Both take a server URL exactly as the command line does (`https://user:pass@host/prefix`, tokens from
COMFY_DRIVE_TOKEN / COMFY_DRIVE_HEADERS or the credentials file) and raise the exceptions of
`comfy_driver.errors`; neither prints, exits or names a command-line command.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_driver.comfy.address import ServerAddress
from comfy_driver.comfy.catalog import Catalog
from comfy_driver.comfy.client import ComfyClient
from comfy_driver.comfy.errors import PromptRejected
from comfy_driver.comfy.events import Event
from comfy_driver.comfy.follow import Watch
from comfy_driver.comfy.settings import Settings
from comfy_driver.comfy.target import Target, parse_target
from comfy_driver.config.series import LoadedSeries, load_series
from comfy_driver.errors import BadInputFile, UserError
from comfy_driver.pipeline.progress import Progress
# (what only `Client` needs, replaying and converting workflows, is imported by it: not on a run's path)
from comfy_driver.pipeline.report import RunReport
from comfy_driver.pipeline.choose import uses_auto
from comfy_driver.pipeline.plan import Plan, build_plan
from comfy_driver.pipeline.control import RunControl, RunOptions
from comfy_driver.pipeline.supervisor import Supervisor

if TYPE_CHECKING:
    from comfy_driver.comfy.job import Job, JobEvent
    from comfy_driver.pipeline.replay import Replayable
    from comfy_driver.sim.server import SimServer

Source = Mapping[str, Any] | str | Path


class Client:
    """One ComfyUI server.

    >>> with Client("http://127.0.0.1:8188") as server:
    ...     job = server.submit("saved-from-the-gui.json", sets={"Sampler.seed": 7})
    ...     files = job.download("out")
    """

    def __init__(self, url: str, *, settings: Settings | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.address = ServerAddress.parse(url, extra_headers=dict(headers or {}))
        self.http = ComfyClient(self.address, settings=settings)

    def catalog(self) -> Catalog:
        """The server's node catalogue (asked once per client)."""
        return self.http.catalog()

    def submit(self, source: Source, *, sets: Mapping[str, Any] | None = None, front: bool = False) -> Job:
        """Queue a workflow and return its job, already listening to the server.

        `source` is an API graph or a GUI-saved workflow (a mapping, or a .json file), or a PNG, WebP
        or MP4 that ComfyUI saved (its embedded prompt runs again). `sets` changes inputs by node title
        or id: `{"Sampler.seed": 7}`; a value naming a local file, set on a file input, is uploaded
        (content-addressed). Model names the server lists under another spelling (a Windows
        sub-folder) take the server's. The graph is validated against the server's catalogue first, so
        a mistake raises PromptRejected naming every node at fault, before anything is queued.
        """
        from comfy_driver.comfy.job import Job
        from comfy_driver.models.in_workflow import rewrite_model_names
        from comfy_driver.pipeline.replay import apply_sets, upload_files
        from comfy_driver.workflow.layout import with_values

        catalog = self.catalog()
        item = self._load(source, catalog)
        local: dict[tuple[str, str], Path] = {}
        if sets:
            item.graph = apply_sets(item.graph, [f"{k}={json.dumps(v)}" for k, v in sets.items()], catalog,
                                    local_files=local)
        rewrite_model_names(item.graph, catalog)
        uploaded = upload_files(self.http, item.graph, local) | catalog.input_files()
        checked = catalog.validate(item.graph, stricter=True, file_exists=lambda kind, name: name in uploaded)
        if not checked.ok:
            raise PromptRejected(checked.error or {}, checked.node_errors, item.graph)
        workflow = with_values(item.workflow, item.graph, catalog) if item.workflow else None
        return Job.submit(self.http, item.graph, workflow=workflow, front=front)

    @staticmethod
    def _load(source: Source, catalog: Catalog) -> Replayable:
        from comfy_driver.pipeline.replay import Replayable, load_replayable
        from comfy_driver.workflow.convert import ui_to_api
        from comfy_driver.workflow.files import detect_format

        if isinstance(source, (str, Path)):
            return load_replayable(Path(source), catalog)
        data = json.loads(json.dumps(source))  # a private copy the caller's later edits cannot change
        kind = detect_format(data)
        if kind == "api":
            return Replayable(data, None)
        if kind == "ui":
            return Replayable(ui_to_api(data, catalog), data)
        raise BadInputFile("not a ComfyUI workflow (neither an API graph nor a GUI-saved workflow)")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_series(series: str | Path | LoadedSeries, *, servers: Sequence[str | Target] | None = None,
               backend: str | None = None, options: RunOptions | None = None,
               on_event: Callable[[str, JobEvent], None] | None = None, progress: Progress | None = None,
               control: RunControl | None = None) -> RunReport:
    """Render every scene of a series (a series.yaml path, or one loaded with `load_series`).

    `servers` overrides the series' own: ComfyUI URLs, `v2+https://...` API v2 endpoints, or `Target`s,
    mixed freely. `on_event(step, event)` receives each job event of each prompt on a native server
    (`step` names the scene and its step). `control.stop()` queues nothing more and lets
    running prompts finish; a second stop (or `control.interrupt()`) interrupts them too; either ends
    with RunStopped, which carries the report. A rerun resumes.
    Returns the report (scenes not done are in it, failed or not run); raises when the run could not go on.
    """
    loaded = series if isinstance(series, LoadedSeries) else load_series(Path(series))
    targets = [parse_target(s) for s in (servers or loaded.series.targets)]
    if not targets:
        raise UserError(f"{loaded.path}: no server to run on", hint="add server: http://host:8188 to the series")
    options = options or RunOptions()
    plan, first = plan_series(loaded, targets, backend, options.settings)
    known = {targets[0]: first} if first is not None else None  # read once: the lane does not ask again

    if on_event is None:
        return Supervisor(plan, targets, options, progress=progress, control=control, catalogs=known).run()
    from comfy_driver.comfy.job import job_event

    def forward(client_id: str, watch: Watch | None, event: Event) -> None:
        if watch is not None:
            public = job_event(watch, event)
            if public is not None:
                on_event(watch.label, public)

    return Supervisor(plan, targets, options, progress=progress, on_event=forward, control=control,
                      catalogs=known).run()


def plan_series(loaded: LoadedSeries, targets: Sequence[Target], backend: str | None,
                settings: Settings) -> tuple[Plan, Catalog | None]:
    """The plan of a series for these targets, and the first target's catalogue it was built with (GUI-saved
    templates are converted with the catalogue of the target that will run them; no target, or a v2 one
    with none: the one shipped). The servers are asked what they offer only for `backend: auto`."""
    facts = None
    if uses_auto(loaded.scenes, backend):
        from comfy_driver.models.needs import read_servers
        facts = read_servers([t.url for t in targets if not t.is_v2], settings)
    first = target_catalog(targets[0], settings) if targets else None
    return build_plan(loaded, backend, first, servers=facts), first


def target_catalog(target: Target, settings: Settings) -> Catalog | None:
    """A target's node catalogue, which GUI-saved templates are converted with (None: a v2 target with
    none; the one comfy-drive ships is used then)."""
    if target.is_v2:
        from comfy_driver.comfy.v2 import V2Client

        with V2Client(target, settings=settings) as v2:
            return v2.catalog()[0]
    first = ComfyClient(target.url, settings=settings)
    try:
        return first.catalog()
    finally:
        first.close()


def simulator(root: Path, *, speed: str = "instant", time_scale: float = 0.2, object_info: Path | None = None,
              host: str = "127.0.0.1", port: int = 0, comfyui: str | None = None, vram_gb: float = 16.0) -> SimServer:
    """The simulated ComfyUI server (not started), writing into `root`, serving the node catalogue
    comfy-drive ships (or `object_info`) with the model files of models.lock, playing the ComfyUI
    release `comfyui` (its catalogue, routes, messages and rules; the default release otherwise),
    on a GPU of `vram_gb` (what its system_stats reports, which `backend: auto` reads).

    `speed`: 'instant' (as fast as the protocol allows: for tests and scripts) or 'realistic' (node,
    step and model-load times scaled by `time_scale`: for demos of progress and queue-ahead).
    """
    from comfy_driver.comfy.catalog import Catalog as _Catalog
    from comfy_driver.comfy.versions import Version
    from comfy_driver.models.catalog import DEFAULT_RELEASE, bundled_catalog, sim_release
    from comfy_driver.models.folders import fill_model_inputs, mark_model_inputs
    from comfy_driver.models.lock import load_lock
    from comfy_driver.paths import models_lock
    from comfy_driver.sim.executor import Timing
    from comfy_driver.sim.server import SimServer

    if speed not in ("instant", "realistic"):
        raise UserError(f"simulator speed {speed!r}: choose 'instant' or 'realistic'")
    lock = load_lock(models_lock())
    release = sim_release(comfyui) if comfyui else DEFAULT_RELEASE
    if object_info is not None:
        try:
            info = json.loads(object_info.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInputFile(f"{object_info}: not an object_info JSON file ({exc})") from None
        catalog = _Catalog(fill_model_inputs(mark_model_inputs(info), lock.by_folder()), version=Version.parse(release))
    else:
        catalog = bundled_catalog(lock, release)
    timing = Timing.realistic(time_scale) if speed == "realistic" else Timing()
    return SimServer(root, catalog, timing=timing, host=host, port=port, vram_gb=vram_gb)


@contextlib.contextmanager
def simulated_server(speed: str = "instant") -> Iterator[str]:
    """A simulated ComfyUI server on a free local port for the length of a `with` block: its URL.

    Its files live in a temporary folder, removed afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="comfy-drive-sim-"))
    try:
        server = simulator(root, speed=speed)
        url = server.start()
        try:
            yield url
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
