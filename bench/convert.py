"""Conversion time (GUI workflow -> API graph) over both conversion oracles and the Wan 2.2 Animate case.

    python bench/convert.py [--repeats 9]

Each workflow is converted `repeats` times and its median taken; the figures are the median (and
90th percentile) over workflows, per oracle, and the median for the 44-node video_wan2_2_14B_animate
case under each frontend's rules. Every conversion is also checked against the frontend's recorded
output, so the speed is that of correct conversions. Needs ../shared/fixtures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.workflow.convert import ui_to_api

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
ORACLES = (  # folder, its object_info, the frontend that made it
    ("oracle", FIXTURES / "comfyui" / "object_info.json", "1.27.10"),
    ("oracle-fe1.49", FIXTURES / "oracle-fe1.49" / "object_info.json", "1.49.6"),
)


def timed(workflow: dict, catalog: Catalog, frontend: str, repeats: int) -> tuple[float, dict]:
    times = []
    out: dict = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = ui_to_api(workflow, catalog, missing="frontend", frontend_version=frontend)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def expected_of(folder: Path, case: dict, source: Path) -> dict:
    own = folder / source.name.replace(".ui.json", ".api.json")
    expected = json.loads((own if own.exists() else folder / f"{case['case']}.api.json").read_text())
    for unstable in case.get("unstable_inputs") or []:  # Load3D viewport captures: new names each time
        node_id, name = unstable.split(".", 1)
        expected[node_id]["inputs"].pop(name, None)
    return expected


def bench_oracle(name: str, object_info: Path, frontend: str, repeats: int) -> float:
    folder = FIXTURES / name
    catalog = Catalog.from_file(object_info)
    medians, exact = [], 0
    for case in json.loads((folder / "index.json").read_text())["cases"]:
        for source in (folder / f"{case['case']}.ui.json", folder / f"{case['case']}.v1.ui.json"):
            if not source.exists():
                continue
            expected = expected_of(folder, case, source)
            seconds, out = timed(json.loads(source.read_text()), catalog, frontend, repeats)
            for unstable in case.get("unstable_inputs") or []:
                node_id, input_name = unstable.split(".", 1)
                out[node_id]["inputs"].pop(input_name, None)
            medians.append(seconds)
            exact += out == expected
    medians.sort()
    median = statistics.median(medians)
    print(f"{name} (frontend {frontend}): {len(medians)} workflows, {exact} converted exactly as the frontend did; "
          f"per workflow median {median * 1000:.3f} ms, p90 {medians[int(0.9 * len(medians))] * 1000:.3f} ms, "
          f"max {medians[-1] * 1000:.3f} ms")
    animate = json.loads((folder / "video_wan2_2_14B_animate.ui.json").read_text())
    animate_s, _ = timed(animate, catalog, frontend, max(repeats, 51))
    print(f"  video_wan2_2_14B_animate (44 nodes, subgraphs): median {animate_s * 1000:.3f} ms")
    return median


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"needs {FIXTURES}")
    medians = [bench_oracle(name, info, frontend, args.repeats) for name, info, frontend in ORACLES]
    worst = max(medians)
    print(f"target <= 1 ms median per workflow: {'met' if worst <= 0.001 else 'NOT met'} (worst oracle {worst * 1000:.3f} ms)")


if __name__ == "__main__":
    main()
