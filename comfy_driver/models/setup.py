"""`comfy-drive setup`: everything a backend needs on a ComfyUI install, in one idempotent command.

The work is first made into a list of actions (so `--dry-run` prints exactly what a real run does):
1. each custom node pack the backend's workflows use, cloned into `custom_nodes/<name>` at its pinned
   commit; a pack already there is checked to be at that commit, and one at another commit (or not a
   git checkout) is refused, never changed behind the user's back;
2. the requirements of each pack installed into ComfyUI's own Python (recorded under ComfyUI's
   `user/comfy-drive/` with a hash of its requirements.txt, so a rerun does not reinstall; the pack's
   checkout itself stays untouched);
3. the backend's model files fetched and verified (`fetch`);
4. a check that ComfyUI lists the packs' nodes: a running server when one is named, otherwise a short
   start of the install (stopped as soon as it answers).
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from comfy_driver.comfy.errors import ServerUnreachable
from comfy_driver.comfy.versions import Version
from comfy_driver.errors import RunError, UserError
from comfy_driver.models.lock import ModelEntry
from comfy_driver.models.packs import PackEntry

MARKERS = "user/comfy-drive/requirements"  # under the ComfyUI folder: per pack, what was installed for which Python


@dataclass
class Action:
    kind: str  # version | clone | keep | requirements | models | check
    text: str
    run: Callable[[], None] | None = None  # None: nothing to do
    changes: bool = True  # False: it only checks (a verification, the node check)


@dataclass
class SetupPlan:
    comfyui: Path
    python: Path | None
    actions: list[Action] = field(default_factory=list)


def comfyui_python(comfyui: Path, given: Path | None) -> Path | None:
    """ComfyUI's own Python: given, or the venv / portable build found in the install, or None."""
    if given is not None:
        return given
    for candidate in ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", ".venv/Scripts/python.exe",
                      "../python_embeded/python.exe"):
        path = comfyui / candidate
        if path.is_file():
            return path
    return None


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise UserError("git is not installed", hint="install git, then run setup again") from None
    if done.returncode != 0:
        raise RunError(f"git {' '.join(args[:2])}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout.strip()


def _requirements_key(pack_dir: Path, python: Path) -> str:
    req = pack_dir / "requirements.txt"
    digest = hashlib.sha256(req.read_bytes()).hexdigest() if req.is_file() else "none"
    return f"{python}\n{digest}\n"


def pack_actions(pack: PackEntry, comfyui: Path, python: Path | None) -> list[Action]:
    dest = comfyui / "custom_nodes" / pack.name
    actions: list[Action] = []
    if dest.exists():
        if not (dest / ".git").exists():
            raise UserError(f"{dest}: already there but not a git checkout, so its commit cannot be checked",
                            hint=f"move it away to let setup clone {pack.url} at {pack.commit[:12]}")
        head = _git("rev-parse", "HEAD", cwd=dest)
        if head != pack.commit:
            raise UserError(f"{dest}: at commit {head[:12]}, models.lock pins {pack.name} at {pack.commit[:12]}",
                            hint=f"check out the pinned commit (git -C {dest} checkout {pack.commit}) or move the "
                                 "folder away; setup does not change a pack you installed")
        actions.append(Action("keep", f"{pack.name}: present at {pack.commit[:12]}"))
    else:
        def clone() -> None:
            _git("clone", "--quiet", "--no-checkout", "--", pack.url, str(dest))
            _git("checkout", "--quiet", "--detach", pack.commit, cwd=dest)
            if _git("rev-parse", "HEAD", cwd=dest) != pack.commit:
                raise RunError(f"{pack.name}: checkout did not reach {pack.commit}")
        actions.append(Action("clone", f"clone {pack.url} at {pack.commit[:12]} into {dest}", clone))
    if pack.requirements:
        actions.append(_requirements_action(pack, dest, comfyui / MARKERS / f"{pack.name}.txt", python))
    return actions


def _requirements_action(pack: PackEntry, dest: Path, marker: Path, python: Path | None) -> Action:
    if python is None:
        raise UserError(f"where is ComfyUI's Python? ({pack.name} has requirements to install into it)",
                        hint="pass --python PATH (the interpreter that runs ComfyUI's main.py)")
    if marker.is_file() and (dest / ".git").exists() and marker.read_text() == _requirements_key(dest, python):
        return Action("requirements", f"{pack.name}: requirements already installed into {python}")

    def install() -> None:
        req = dest / "requirements.txt"
        if req.is_file():
            done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(req)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise RunError(f"{pack.name}: installing its requirements failed: {' | '.join(tail)}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_requirements_key(dest, python))

    return Action("requirements", f"pip install -r {dest / 'requirements.txt'} with {python}", install)


def check_action(nodes: list[str], server: str | None, comfyui: Path, python: Path | None,
                 list_nodes: Callable[[str], set[str]], start_timeout: float) -> Action:
    """The check that ComfyUI lists the packs' nodes, on a running server or a short start."""
    def verify(url: str) -> None:
        listed = list_nodes(url)
        missing = [n for n in nodes if n not in listed]
        if missing:
            raise RunError(f"ComfyUI at {url} does not list {', '.join(missing)}",
                           hint="look at its log for a custom node that failed to import")

    if server is not None:
        return Action("check", f"check that {server} lists {len(nodes)} node classes", lambda: verify(server),
                      changes=False)
    if python is None:
        raise UserError("no --server to check, and ComfyUI's Python is unknown for a short start",
                        hint="pass --server URL (a running ComfyUI) or --python PATH")

    def short_start() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = comfyui / "user" / "comfy-drive-setup-check.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen([str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                     "--disable-auto-launch"], cwd=comfyui, stdout=out, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + start_timeout
                while True:
                    if proc.poll() is not None:
                        raise RunError(f"ComfyUI stopped during the check (exit {proc.returncode}); see {log}")
                    try:
                        verify(url)
                        return
                    except ServerUnreachable:
                        if time.monotonic() > deadline:
                            raise RunError(f"ComfyUI did not answer within {start_timeout:g} s; see {log}") from None
                        time.sleep(1.0)
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    return Action("check", f"start {comfyui / 'main.py'} briefly and check that it lists {len(nodes)} node classes",
                  short_start, changes=False)


def installed_version(comfyui: Path) -> Version | None:
    """The release of a ComfyUI folder, from the comfyui_version.py its releases carry."""
    path = comfyui / "comfyui_version.py"
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", path.read_text(errors="replace")) \
        if path.is_file() else None
    return Version.parse(found.group(1)) if found else None


def version_action(comfyui: Path, needs: dict[str, str]) -> Action | None:
    """The ComfyUI release the backends need (backends.yaml's `needs: comfyui`): too old is refused
    before anything is installed, since updating ComfyUI is a step setup does not take for the user."""
    wanted = {b: v for b, v in ((b, Version.parse(t)) for b, t in needs.items()) if v is not None}
    if not wanted:
        return None
    oldest = max(wanted.values())
    who = ", ".join(b for b, v in wanted.items() if v == oldest)
    found = installed_version(comfyui)
    if found is None:
        return Action("version", f"{comfyui} does not say its ComfyUI version (no comfyui_version.py); {who} "
                                 f"needs ComfyUI {oldest} or newer", changes=False)
    if found < oldest:
        raise UserError(f"{comfyui} is ComfyUI {found}; {who} needs ComfyUI {oldest} or newer",
                        hint="update ComfyUI there (git pull, then its requirements.txt with its Python), "
                             "then run setup again")
    return Action("version", f"ComfyUI {found} in {comfyui}: {who} needs {oldest} or newer", changes=False)


def make_plan(comfyui: Path, packs: list[PackEntry], models: list[ModelEntry], *, python: Path | None,
              server: str | None, fetch_models: Callable[[], None], describe_models: str, models_missing: bool,
              list_nodes: Callable[[str], set[str]], start_timeout: float = 600.0,
              versions: dict[str, str] | None = None) -> SetupPlan:
    """`versions`: backend -> the oldest ComfyUI release it runs on, for those that say."""
    if not (comfyui / "main.py").is_file():
        raise UserError(f"{comfyui}: not a ComfyUI folder (no main.py)", hint="pass the folder that holds main.py")
    python = comfyui_python(comfyui, python)
    plan = SetupPlan(comfyui, python)
    version = version_action(comfyui, versions or {})
    if version is not None:
        plan.actions.append(version)
    for pack in packs:
        plan.actions += pack_actions(pack, comfyui, python)
    if models:
        plan.actions.append(Action("models", describe_models, fetch_models, changes=models_missing))
    nodes = sorted({n for p in packs for n in p.nodes})
    if nodes:
        plan.actions.append(check_action(nodes, server, comfyui, python, list_nodes, start_timeout))
    return plan


def execute(plan: SetupPlan, echo: Callable[[str], None]) -> int:
    """Run the plan's actions in order; the number that changed something."""
    changed = 0
    for action in plan.actions:
        echo(f"{action.kind:<12} {action.text}")
        if action.run is not None:
            action.run()
            changed += action.changes
    return changed
