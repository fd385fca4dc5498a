"""Series templates render in a sandbox: no code runs, no include, every growth bounded, clear errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfy_driver.cli import main
from comfy_driver.config.series import load_series
from comfy_driver.config.templates import render
from comfy_driver.errors import UserError

CTX = {"series": {"title": "Tiny"}, "vars": {"style": "watercolor"}, "scene": {"id": "s01", "index": 1}}

ATTACKS = {
    "globals through a builtin": "{{ cycler.__init__.__globals__.os.system('id') }}",
    "class walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "format field walk": "{{ '{0.__class__}'.format(1) }}",
    "include": "{% include 'x.txt' %}",
    "extends": "{% extends 'x.txt' %}",
    "import": "{% import 'x.txt' as x %}",
    "macro recursion": "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}",
    "recursive loop": "{% for i in [1] recursive %}{{ loop([i]) }}{% endfor %}",
    "huge range": "{{ range(10**12)|list }}",
    "repeat string": "{{ 'x' * 10**10 }}",
    "repeat list": "{{ (range(100)|list) * 1000 }}",
    "power": "{{ 7 ** 100000 }}",
    "doubling by concat": "{% set x = 'x' * 60000 %}{% set x = x ~ x %}{{ x }}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "printf width": "{{ '%999999999s' % 1 }}",
    "format filter width": "{{ '%999999999s'|format(1) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format nested width": "{{ '{:>{w}}'.format(1, w=10**9) }}",
    "center filter": "{{ 'x'|center(10**9) }}",
    "center method": "{{ 'x'.center(10**9) }}",
    "replace amplification": "{{ 'ab'|replace('a', 'x' * 50000)|replace('x', 'y' * 50000) }}",
    "join amplification": "{{ ','.join(['x' * 90000, 'y' * 90000]) }}",
    "batch padding": "{{ [1, 2]|batch(10**9, 0)|list }}",
    "indent amplification": "{{ ('a\n' * 50000)|indent(1000) }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "namespace accumulation": "{% set ns = namespace(x='x') %}{{ ns.x }}",
    "mutation": "{% set l = [1] %}{{ l.append(2) }}",
}


@pytest.mark.parametrize("template", list(ATTACKS.values()), ids=list(ATTACKS))
def test_attacks_are_refused_quickly(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        render(template, CTX, where="series.yaml:7", field="prompt")
    assert time.monotonic() - started < 3.0
    assert str(info.value).startswith("series.yaml:7: prompt: ")


def test_ordinary_templates_still_render() -> None:
    text = ("{{ vars.style|upper }} {{ series.title }} scene {{ scene.index }} "
            "{% for w in ['a', 'b'] %}{{ w }}{% if not loop.last %}-{% endif %}{% endfor %} "
            "{{ 'x' * 3 }} {{ '%03d' % 7 }} {{ '{:>4}'.format('y') }} {{ ['p', 'q']|join('+') }} "
            "{{ 'a b'.split()|length }} {{ 2 ** 10 }} {{ range(3)|list }}")
    assert render(text, CTX, where="f:1", field="prompt") == (
        "WATERCOLOR Tiny scene 1 a-b xxx 007    y p+q 2 1024 [0, 1, 2]")


def test_undefined_names_say_what_was_meant() -> None:
    with pytest.raises(UserError, match=r"undefined template variable vars\.styl \(did you mean vars\.style\?\)"):
        render("{{ vars.styl }}", CTX, where="f:1", field="prompt")
    with pytest.raises(UserError, match=r"undefined template variable 'scen' \(did you mean scene\?\)"):
        render("{{ scen.id }}", CTX, where="f:1", field="prompt")


SERIES = """\
title: Sandbox
backend: svd
vars: {{style: ink}}
defaults: {{width: 64, height: 64, fps: 8, frames: 4}}
characters:
  - name: Mira
    description: "{description}"
episodes:
  - id: ep01
    title: "{title}"
    scenes:
      - id: one
        character: Mira
        prompt: "{prompt}"
"""


def write_series(tmp_path: Path, prompt: str = "{{ character.description }}", title: str = "{{ series.title }} 1",
                 description: str = "a fox, {{ vars.style }}") -> Path:
    path = tmp_path / "series.yaml"
    path.write_text(SERIES.format(prompt=prompt, title=title, description=description))
    return path


def test_episode_titles_and_descriptions_are_rendered(tmp_path: Path) -> None:
    loaded = load_series(write_series(tmp_path, prompt="{{ episode.title }}: {{ character.description }}"))
    assert loaded.scenes[0].episode_title == "Sandbox 1"
    assert loaded.scenes[0].prompt == "Sandbox 1: a fox, ink"


@pytest.mark.parametrize("field,kw", [("title", {"title": "{{ vars.nope }}"}),
                                      ("description", {"description": "{{ vars.nope }}"})])
def test_undefined_names_in_titles_and_descriptions_are_errors(tmp_path: Path, field: str, kw: Any) -> None:
    with pytest.raises(UserError, match=rf"series.yaml:\d+: {field}: undefined template variable vars\.nope"):
        load_series(write_series(tmp_path, **kw))


def test_a_dry_run_of_a_hostile_series_runs_no_code(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned.txt"
    attack = f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
    result = CliRunner().invoke(main, ["run", str(write_series(tmp_path, prompt=attack)), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "template refused" in result.output or "undefined template variable 'cycler'" in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize("text", ["", "a prompt", "line\n", "two\n\n", "a\r\nb\rc\n", "100% sure #} %} }}", "x" * 100_000,
                                  "\n", "tail\r"])
def test_a_string_without_a_template_renders_as_jinja_would_without_loading_it(text: str) -> None:
    from comfy_driver.config import sandbox

    assert render(text, CTX, where="w", field="f") == sandbox.render(text, CTX, where="w", field="f")


def test_a_series_without_templates_never_loads_jinja(tmp_path: Path) -> None:
    import subprocess
    import sys

    series = tmp_path / "series.yaml"
    series.write_text("title: Plain\nbackend: svd\nepisodes:\n  - id: e\n    scenes:\n      - {id: a, prompt: a plain prompt}\n")
    code = ("import sys; from pathlib import Path; from comfy_driver.config.series import load_series; "
            "load_series(Path(sys.argv[1])); print('jinja2' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code, str(series)], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
