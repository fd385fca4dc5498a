"""A comparison written out: benchmark tables (Markdown + JSON) and one self-contained HTML page.

Figures per backend are medians over the scenes it rendered (the machines are noisy). The page
embeds its videos, their poster frames and an SVG chart, so it opens offline, moved or mailed; a
video too large to embed is linked beside the page instead.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape

from comfy_driver import confined
from comfy_driver.media.ffmpeg import ffmpeg_exe
from comfy_driver.pipeline.compare import BackendResult, Comparison

EMBED_LIMIT = 20 << 20  # bytes: larger videos are linked, not embedded
GIB = 1 << 30

# (key, label, format) of the rows of the main table, in order
ROWS = [
    ("scenes", "scenes with a clip", "{}"),
    ("queue_wait_s", "queue wait (s)", "{:.2f}"),
    ("execution_s", "execution (s)", "{:.2f}"),
    ("model_load_s", "model load (s)", "{:.2f}"),
    ("s_per_step", "sampler (s/step)", "{:.3f}"),
    ("render_s_per_output_s", "render s per output s", "{:.2f}"),
    ("peak_vram_gib", "peak VRAM in use (GiB)", "{:.2f}"),
    ("peak_ram_gib", "peak RAM in use (GiB)", "{:.2f}"),
    ("size", "output size", "{}"),
    ("fps", "output fps", "{:g}"),
    ("frames", "output frames", "{:g}"),
    ("blur", "blur (lower is sharper)", "{:.2f}"),
    ("flicker", "flicker (luma jump / frame)", "{:.3f}"),
    ("frame_change", "frame change (mean luma diff)", "{:.2f}"),
]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(result: BackendResult) -> dict[str, Any]:
    """A backend's medians over its rendered scenes, and its median time per node."""
    done = [s for s in result.scenes.values() if s.status == "done"]
    sizes = sorted({f"{s.width}x{s.height}" for s in done})
    out: dict[str, Any] = {"scenes": f"{len(done)}/{len(result.scenes)}", "size": ", ".join(sizes) or None,
                           "peak_vram_gib": result.peak_vram / GIB if result.peak_vram is not None else None,
                           "peak_ram_gib": result.peak_ram / GIB if result.peak_ram is not None else None}
    for key in ("queue_wait_s", "execution_s", "model_load_s", "s_per_step", "render_s_per_output_s", "fps",
                "frames", "blur", "flicker", "frame_change"):
        out[key] = _median([getattr(s, key) for s in done])
    titles = {t for s in done for t in s.nodes}
    out["nodes"] = {t: _median([s.nodes.get(t) for s in done]) for t in sorted(titles)}
    return out


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def tables(comparison: Comparison, title: str) -> tuple[dict[str, Any], str]:
    """The benchmark as JSON data and as Markdown."""
    sums = {r.backend: summary(r) for r in comparison.backends}
    data = {"series": title, "scenes": comparison.scenes, "medians": sums,
            "per_scene": {r.backend: {k: {**asdict(s), "clip": str(s.clip) if s.clip else None}
                                      for k, s in r.scenes.items()} for r in comparison.backends}}
    names = list(sums)
    lines = [f"# Backend comparison: {title}", "",
             f"Scenes: {', '.join(comparison.scenes)}. Figures are medians over the scenes each backend rendered; "
             "memory is the peak in use that the server reported while it rendered.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(sums[n][key], fmt) for n in names) + " |")
    busiest = sorted({t for n in names for t in sums[n]["nodes"]},
                     key=lambda t: -max(sums[n]["nodes"].get(t) or 0 for n in names))[:12]
    if busiest:
        lines += ["", "## Time per node (median s, the slowest)", "", "| node | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for t in busiest:
            lines.append(f"| {t} | " + " | ".join(_cell(sums[n]["nodes"].get(t), "{:.3f}") for n in names) + " |")
    lines += ["", "## Per scene", "", "| scene | backend | status | execution (s) | size | fps | frames | clip |",
              "|---|---|---|---|---|---|---|---|"]
    for key in comparison.scenes:
        for r in comparison.backends:
            s = r.scenes[key]
            clip = s.clip.relative_to(comparison.folder).as_posix() if s.clip else (s.error or "").splitlines()[:1]
            lines.append(f"| {key} | {s.rendered_by or r.backend} | {s.status} | {_cell(s.execution_s, '{:.2f}')} | "
                         f"{f'{s.width}x{s.height}' if s.width else '-'} | {_cell(s.fps, '{:g}')} | "
                         f"{_cell(s.frames, '{}')} | {clip if isinstance(clip, str) else ' '.join(clip)} |")
    return data, "\n".join(lines) + "\n"


def _chart(sums: dict[str, dict[str, Any]]) -> str:
    """An SVG bar per backend: median execution, its model-load part darker, and the queue wait."""
    names = list(sums)
    longest = max([(s["execution_s"] or 0) + (s["queue_wait_s"] or 0) for s in sums.values()] + [1e-9])
    row, left, width = 34, 150, 520
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{row * len(names) + 30}" '
             'font-family="sans-serif" font-size="13">']
    for i, name in enumerate(names):
        s = sums[name]
        y = 8 + i * row
        run, load, wait = s["execution_s"] or 0, s["model_load_s"] or 0, s["queue_wait_s"] or 0
        x_run, x_load, x_wait = (width * v / longest for v in (run, load, wait))
        parts.append(f'<text x="0" y="{y + 17}">{escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x_run:.1f}" height="22" fill="#6aa0e8"/>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x_load:.1f}" height="22" fill="#2f5d9b"/>')
        parts.append(f'<rect x="{left + x_run:.1f}" y="{y}" width="{x_wait:.1f}" height="22" fill="#d9d9d9"/>')
        parts.append(f'<text x="{left + x_run + x_wait + 6:.1f}" y="{y + 16}">{run:.2f} s</text>')
    y = 12 + row * len(names)
    parts.append(f'<text x="{left}" y="{y + 8}" fill="#555">dark: model load, blue: the rest of execution, '
                 'grey: queue wait (medians)</text></svg>')
    return "".join(parts)


def _poster(video: Path, seconds: float) -> str:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", f"{seconds:.3f}",
                           "-i", str(video), "-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "-"],
                          capture_output=True, check=False)
    return "data:image/png;base64," + base64.b64encode(proc.stdout).decode() if proc.stdout else ""


_PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}: backends compared</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}video,img{max-width:100%;background:#000}
.scene{margin:18px 0}.note{color:#666;font-size:90%}
</style></head><body>
<h1>{{ title }}: backends compared</h1>
<p class="note">Scenes: {{ scenes|join(', ') }}. Medians over the scenes each backend rendered.</p>
<h2>Timings</h2>{{ chart|safe }}
<table><tr><th></th>{% for n in names %}<th>{{ n }}</th>{% endfor %}</tr>
{% for label, cells in rows %}<tr><td>{{ label }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Side by side</h2>
{% for v in videos %}<div class="scene"><h3>{{ v.key }}</h3>
<video controls loop muted playsinline poster="{{ v.poster }}" src="{{ v.src }}"></video></div>
{% endfor %}</body></html>
""")


def write(comparison: Comparison, title: str) -> dict[str, Path]:
    """benchmark.json, benchmark.md and index.html in the comparison folder; their paths."""
    data, markdown = tables(comparison, title)
    folder = comparison.folder
    paths = {"json": confined.write_text(folder, "benchmark.json", json.dumps(data, indent=2) + "\n"),
             "markdown": confined.write_text(folder, "benchmark.md", markdown)}
    sums = data["medians"]
    names = list(sums)
    rows = [(label, [_cell(sums[n][key], fmt) for n in names]) for key, label, fmt in ROWS]
    videos = []
    for key, path in comparison.videos.items():
        longest = max((s.duration_s or 0) for r in comparison.backends for s in [r.scenes[key]])
        src = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode() \
            if path.stat().st_size <= EMBED_LIMIT else path.relative_to(folder).as_posix()
        videos.append({"key": key, "src": src, "poster": _poster(path, longest / 2)})
    paths["page"] = confined.write_text(folder, "index.html", _PAGE.render(
        title=title, scenes=comparison.scenes, names=names, rows=rows, chart=_chart(sums), videos=videos))
    return paths
