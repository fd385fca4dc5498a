"""What every command shares: the `main` group, error rendering and exit statuses, the options of
connections and the simulator, the models.lock in force."""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from comfy_driver import __version__
from comfy_driver.comfy.errors import AccessRefused, OutOfMemory
from comfy_driver.errors import DriveError, UserError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_status(exc: DriveError) -> int:
    """The one place errors become exit statuses: 2 bad input, 130 stopped by the user, 1 the rest."""
    from comfy_driver.pipeline.control import RunStopped

    if isinstance(exc, RunStopped):
        return 130
    return 2 if isinstance(exc, UserError) else 1


# What the command line adds to a library hint: the command that helps (the library names none).
_COMMAND_HINTS: list[tuple[type[DriveError], str]] = [
    (AccessRefused, "comfy-drive login URL --header 'Authorization: Bearer …' stores them (mode 600)"),
    (OutOfMemory, "comfy-drive free --server URL unloads the server's models"),
]


def render_error(exc: DriveError) -> str:
    text = str(exc)
    for cls, command in _COMMAND_HINTS:
        if isinstance(exc, cls):
            text += f"\n  {command}"
    return text


def handle_errors(fn: F) -> F:
    """Turn every error into one message and an exit status; tracebacks only with --debug."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except DriveError as exc:
            if debug:
                traceback.print_exc()
            _fail(render_error(exc), exit_status(exc))
        except KeyboardInterrupt:
            _fail("interrupted; rerun the same command to resume", 130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
            if debug:
                traceback.print_exc()
            _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", 1)
    return wrapper  # type: ignore[return-value]


class FiniteRange(click.FloatRange):
    """A float option within bounds; nan and infinity are refused (they pass every comparison)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# The module that defines each command: a command's module is imported when it runs (`--help` imports all, for
# their descriptions), so that `comfy-drive run` does not pay for the code of the other commands.
COMMAND_MODULES = {
    "run": "run", "example": "run",
    "convert": "graphs", "replay": "graphs",
    "fetch": "models", "lock": "models", "setup": "models", "doctor": "models",
    "sim": "servers", "login": "servers", "queue": "servers", "interrupt": "servers", "free": "servers",
    "stats": "servers",
    "compare": "compare", "try": "compare",
    "auth": "publish", "publish": "publish",
}


class LazyGroup(click.Group):
    """The top-level group: its commands are imported on first use (each module registers its own on `main`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"comfy_driver.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="comfy-drive")
def main(debug: bool) -> None:
    """Drive a ComfyUI server as a production line for short AI videos."""


SIMULATE_HELP = ("Run against a built-in simulated ComfyUI server: 'realistic' timing (the default) "
                 "or 'instant'.")


def simulate_option(fn: F) -> F:
    """`--simulate [realistic|instant]`: the bare flag means realistic timing."""
    return click.option("--simulate", type=click.Choice(["realistic", "instant"]), is_flag=False,
                        flag_value="realistic", default=None, help=SIMULATE_HELP)(fn)


def connection_options(fn: F) -> F:
    """Timeouts, retries, keepalive and TLS of every server a command talks to, as one `settings`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, timeout: float, connect_timeout: float, retries: int, keepalive: float,
                ca_bundle: Path | None, insecure: bool, **kwargs: Any) -> Any:
        from comfy_driver.comfy.settings import Settings

        if insecure and ca_bundle:
            raise click.UsageError("--insecure and --ca-bundle contradict each other: choose one")
        if insecure:  # said once here, instead of a warning from urllib3 on every request
            import warnings

            from urllib3.exceptions import InsecureRequestWarning

            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            click.echo("warning: --insecure: the server's TLS certificate is not checked", err=True)
        verify: bool | str = str(ca_bundle) if ca_bundle else not insecure
        settings = Settings(timeout=timeout, connect_timeout=connect_timeout, retries=retries,
                            keepalive=keepalive, dead_after=max(90.0, 4 * keepalive), verify=verify)
        return fn(*args, settings=settings, **kwargs)

    options = [
        click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds an HTTP answer of the server may take."),
        click.option("--connect-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds to open a connection to the server."),
        click.option("--retries", default=4, show_default=True, type=click.IntRange(1, 100),
                     help="Tries of a request that can be repeated safely, after a refused connection or a 502-504."),
        click.option("--keepalive", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds between pings of a quiet websocket (proxies drop idle ones)."),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Trust the certificates in this PEM file (a self-signed server, a company CA); "
                          "REQUESTS_CA_BUNDLE is honoured too."),
        click.option("--insecure", is_flag=True, help="Do not check the server's TLS certificate."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _simulated(speed: str | None) -> Iterator[str | None]:
    """A simulated server for the length of a command (its URL), or None when not wanted."""
    if speed is None:
        yield None
        return
    from comfy_driver.api import simulated_server

    with simulated_server(speed=speed) as url:
        yield url


LOCK_HELP = "The models.lock to use (default: your own in the config folder, else the shipped one)."


def _lock_path(lock: Path | None) -> Path:
    from comfy_driver.paths import models_lock

    return lock or models_lock()


def _stop_on_signals(control: Any) -> dict[int, Any]:
    """First Ctrl-C / SIGTERM: stop queueing, let the running scene finish; second: interrupt it."""
    def handler(signum: int, frame: Any) -> None:
        control.stop()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _client(server: str, settings: Any = None) -> Any:
    from comfy_driver.comfy.client import ComfyClient

    return ComfyClient(server, settings=settings)


