"""The comfy-drive command line: parse arguments, call the library, print, map errors to exit codes.

Exit status: 0 success, 1 the run failed (a scene, the server), 2 bad input (file, argument, URL),
130 interrupted. Errors print one clear message and no traceback unless --debug.

One module per group of commands, each registering on the `main` group of `base`, which imports a
command's module when that command is used (`base.COMMAND_MODULES`):
`run` (run, example), `graphs` (convert, replay), `models` (fetch, lock, setup, doctor), `servers`
(sim, login, queue, interrupt, free, stats), `compare` (compare, try), `publish` (auth, publish).
"""

from __future__ import annotations

from comfy_driver.cli.base import exit_status, main, render_error

__all__ = ["exit_status", "main", "render_error"]
