"""The publishing commands: `auth youtube`, `publish`, and the publish step of `run --publish`."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from comfy_driver.cli.base import handle_errors, main
from comfy_driver.errors import UserError

ENDPOINT_HELP = "Send YouTube API calls to this address instead of Google's (a local test server)."


class UploadBar:
    """Upload progress on stderr: redrawn in place on a terminal, a line per quarter elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.drawn = 0  # the cells of the line on screen

    def __call__(self, episode: str, sent: int, total: int) -> None:
        from comfy_driver.pipeline.progress import redrawn

        start = self.started.setdefault(episode, time.monotonic())
        pct = int(100 * sent / total) if total else 100
        rate = sent / max(time.monotonic() - start, 1e-6) / 1e6
        line = f"episode {episode}: uploading {pct:3d}%  {sent / 1e6:.1f}/{total / 1e6:.1f} MB  {rate:.1f} MB/s"
        if self.tty:  # one line however narrow the terminal (a wrapped line would stay behind at each redraw)
            text, self.drawn = redrawn(line, self.drawn, sys.stderr)
            if sent >= total:  # the finished line stays; the next one starts below it
                text, self.drawn = text + "\n", 0
            click.echo(text, nl=False, err=True)
        elif pct // 25 > self.shown.get(episode, -1):
            self.shown[episode] = pct // 25
            click.echo(line, err=True)


def _say(text: str) -> None:
    click.echo(text, err=True)


@contextlib.contextmanager
def sign_in_command(loaded: Any) -> Iterator[None]:
    """A sign-in problem gets the one command that fixes it, for this series' account and scopes."""
    from comfy_driver.publish.errors import SignInNeeded

    try:
        yield
    except SignInNeeded as exc:
        settings = loaded.series.publish
        command = "comfy-drive auth youtube" + (f" --series {loaded.path}" if settings is not None else "")
        raise SignInNeeded(exc.message, hint=f"{exc.hint + '; ' if exc.hint else ''}run: {command}") from None


def show_plan(planned: list[Any]) -> None:
    from comfy_driver.publish.metadata import Frame, rfc3339

    for item in planned:
        meta, ep = item.meta, item.episode
        when = f", public at {rfc3339(meta.publish_at)}" if meta.publish_at else ""
        click.echo(f"episode {ep.id}: " + (f"{ep.path.name} ({ep.path.stat().st_size} bytes)" if ep.path.is_file()
                                           else "not rendered yet"))
        click.echo(f"  title:       {meta.title}")
        click.echo(f"  privacy:     {meta.privacy}{when}; made for kids: {'yes' if meta.made_for_kids else 'no'}; "
                   f"synthetic media: {'yes' if meta.contains_synthetic_media else 'no'}")
        click.echo(f"  category:    {meta.category_id}" + (f"; language: {meta.language}" if meta.language else ""))
        click.echo(f"  tags:        {', '.join(meta.tags)}")
        if meta.playlist:
            click.echo(f"  playlist:    {meta.playlist} ({meta.playlist_privacy})")
        if meta.thumbnail is not None:
            thumb = meta.thumbnail
            click.echo("  thumbnail:   " + (f"frame at {thumb.at:g} s of scene {thumb.scene}" if isinstance(thumb, Frame)
                                            else str(thumb)))
        click.echo("  description: " + meta.description.replace("\n", "\n               "))
        for note in ep.notes:
            click.echo(f"  note:        {note}")


def open_for_run(loaded: Any, *, endpoint: str | None, republish: bool, dry_run: bool) -> Any:
    """`run --publish`: check the publish section for every episode and the sign-in, before rendering."""
    from comfy_driver.pipeline.publishing import open_publisher, plan, planned_episodes

    root = loaded.output_dir / loaded.slug
    planned = plan(loaded, planned_episodes(loaded, loaded.scenes), root, republish=republish)
    if dry_run:
        show_plan(planned)
        return None
    with sign_in_command(loaded):
        return open_publisher(loaded, root, endpoint=endpoint, republish=republish, say=_say,
                              on_progress=UploadBar())


def publish_report(loaded: Any, report: Any, publisher: Any, episodes: tuple[str, ...] = (),
                   earlier: dict[str, Any] | None = None) -> bool:
    """Publish the report's finished episodes (but those in `earlier`, published while the run went
    on, whose records are kept); False when one failed or waits for the quota."""
    from comfy_driver.pipeline.publishing import attach, plan, publish_all, rendered_episodes

    root = loaded.output_dir / loaded.slug
    earlier = earlier or {}
    found = [e for e in rendered_episodes(loaded, report, root) if e.id not in earlier]
    if episodes:
        found = [e for e in found if e.id in episodes]
    planned = plan(loaded, found, root, republish=publisher.options.republish)
    with sign_in_command(loaded):
        records = {**earlier, **publish_all(publisher, planned, _say)}
    attach(report, records, root)
    uploads = sum(r.status == "published" for r in records.values())
    _say(f"YouTube quota used: {uploads} upload(s) of the 100 a day, {publisher.calls.units} of the 10,000 "
         "daily units")
    return all(r.status not in ("failed", "stopped") for r in records.values())


@main.group()
def auth() -> None:
    """Sign in to the services comfy-drive publishes to."""


@auth.command("youtube")
@click.option("--account", default="default", show_default=True, help="A name for this channel's sign-in.")
@click.option("--client-secrets", type=click.Path(path_type=Path), default=None,
              help="The OAuth client JSON (type Desktop app) from Google Cloud console "
                   "[default: client_secret.json in the comfy-drive config folder].")
@click.option("--playlists", is_flag=True, help="Also allow managing playlists (the series names a playlist).")
@click.option("--series", "series_file", type=click.Path(path_type=Path), default=None,
              help="Ask for what this series' publish section needs (playlists, account).")
@click.option("--no-browser", is_flag=True, help="Print the URL instead of opening a browser (remote machines).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Local port Google's answer comes back to (forward it with ssh -L on a remote machine).")
@handle_errors
def auth_youtube(account: str, client_secrets: Path | None, playlists: bool, series_file: Path | None,
                 no_browser: bool, port: int) -> None:
    """Allow comfy-drive to upload to a YouTube channel (OAuth in the browser; the token is kept 0600)."""
    from comfy_driver.publish.auth import sign_in, youtube_dir

    if series_file is not None:
        from comfy_driver.config.series import load_series
        from comfy_driver.pipeline.publishing import settings_of

        settings = settings_of(load_series(series_file))
        playlists = playlists or settings.playlist is not None
        if account == "default":
            account = settings.account
    secrets = client_secrets or youtube_dir() / "client_secret.json"
    path = sign_in(account, secrets, playlists=playlists, open_browser=not no_browser, port=port, say=_say)
    click.echo(f"signed in: account {account!r}, token saved in {path} (mode 600)")


@main.command()
@click.argument("series_file", type=click.Path(path_type=Path))
@click.option("--episode", "episodes", multiple=True, help="Only this episode (repeatable).")
@click.option("--dry-run", is_flag=True, help="Check and show what would be uploaded; upload nothing.")
@click.option("--republish", is_flag=True, help="Upload again an episode re-rendered since its upload (a new video).")
@click.option("--youtube-endpoint", default=None, help=ENDPOINT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@handle_errors
def publish(series_file: Path, episodes: tuple[str, ...], dry_run: bool, republish: bool,
            youtube_endpoint: str | None, as_json: bool) -> None:
    """Upload the rendered episodes of SERIES_FILE to YouTube; each once, resumable."""
    from comfy_driver.config.series import load_series
    from comfy_driver.pipeline.outlock import claim_output
    from comfy_driver.pipeline.publishing import open_publisher, plan, rendered_episodes, settings_of
    from comfy_driver.pipeline.report import RunReport

    loaded = load_series(series_file)
    settings_of(loaded)
    root = loaded.output_dir / loaded.slug
    try:
        report = RunReport.model_validate_json((root / "report.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{series_file}: nothing rendered yet ({root / 'report.json'} is missing)",
                        hint=f"run: comfy-drive run {series_file}") from None
    known = [e.id for e in report.episodes]
    unknown = [e for e in episodes if e not in known]
    if unknown:
        raise UserError(f"--episode {unknown[0]}: no such episode", hint=f"episodes: {', '.join(known)}")
    rendered = [e.id for e in report.episodes if e.status == "done"]
    stills = [e.id for e in report.episodes if e.status == "no video" and e.id in episodes]
    if stills:
        raise UserError(f"--episode {stills[0]}: its scenes make still images; there is no video to publish")
    waiting = [e for e in episodes if e not in rendered]
    if waiting:
        raise UserError(f"--episode {waiting[0]}: not rendered yet", hint=f"run: comfy-drive run {series_file}")
    if dry_run:
        found = [e for e in rendered_episodes(loaded, report, root) if not episodes or e.id in episodes]
        show_plan(plan(loaded, found, root, republish=republish))
        click.echo(f"{len(found)} episode(s) valid; nothing uploaded (dry run)")
        return
    with claim_output(root, series=loaded.series.title):  # never two publishers on one series
        with sign_in_command(loaded):
            publisher = open_publisher(loaded, root, endpoint=youtube_endpoint, republish=republish, say=_say,
                                       on_progress=UploadBar())
        try:
            ok = publish_report(loaded, report, publisher, episodes)
        finally:
            publisher.close()
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        for e in report.episodes:
            if e.published is not None:
                click.echo(f"episode {e.id}: {e.published.line()}")
    if not ok:
        sys.exit(1)
