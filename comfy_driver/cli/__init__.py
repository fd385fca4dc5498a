"""The comfy-drive command line: parse arguments, call the library, print, map errors to exit codes.

Exit status: 0 success, 1 the run failed (a scene, the server), 2 bad input (file, argument, URL),
130 interrupted. Errors print one clear message and no traceback unless --debug.

One module per group of commands, each registering on the `main` group of `base`:
`run` (run, example), `graphs` (convert, replay), `models` (fetch, lock, setup, doctor), `servers`
(sim, login, queue, interrupt, free, stats), `compare` (compare, try), `publish` (auth, publish).
"""

from __future__ import annotations

from comfy_driver.cli import compare, graphs, models, run, servers  # noqa: F401 - they register their commands
from comfy_driver.cli.base import exit_status, handle_errors, main, render_error
from comfy_driver.cli.publish import auth, publish

main.add_command(auth)
main.add_command(publish)
for _command in (auth.commands["youtube"], publish):
    _command.callback = handle_errors(_command.callback)  # type: ignore[type-var]

__all__ = ["exit_status", "main", "render_error"]
