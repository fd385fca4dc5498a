"""Conversion time (GUI workflow -> API graph) over the whole oracle corpus and the Wan 2.2 Animate case.

    python bench/convert.py [--repeats 9]

Each workflow is converted `repeats` times and its median taken; the figures are the median (and
90th percentile) over workflows, and the median for the 44-node video_wan2_2_14B_animate case.
Every conversion is also checked against the frontend's recorded output, so the speed is that of
correct conversions. Needs ../shared/fixtures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from comfy_driver.comfy.catalog import Catalog
from comfy_driver.paths import ROOT
from comfy_driver.workflow.convert import ui_to_api

FIXTURES = ROOT.parent / "shared" / "fixtures"


def timed(workflow: dict, catalog: Catalog, repeats: int) -> tuple[float, dict]:
    times = []
    out: dict = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = ui_to_api(workflow, catalog, missing="frontend")
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"needs {FIXTURES}")
    catalog = Catalog(json.loads((FIXTURES / "comfyui" / "object_info.json").read_text()))
    oracle = FIXTURES / "oracle"
    medians, exact, total = [], 0, 0
    for case in json.loads((oracle / "index.json").read_text())["cases"]:
        expected = json.loads((oracle / f"{case['case']}.api.json").read_text())
        for fmt in ("ui", "v1.ui"):
            workflow = json.loads((oracle / f"{case['case']}.{fmt}.json").read_text())
            seconds, out = timed(workflow, catalog, args.repeats)
            medians.append(seconds)
            exact += out == expected
            total += 1
    animate = json.loads((oracle / "video_wan2_2_14B_animate.ui.json").read_text())
    animate_s, _ = timed(animate, catalog, max(args.repeats, 51))
    medians.sort()
    print(f"{total} workflows ({total // 2} graphs x 2 formats), {exact} converted exactly as the frontend did")
    print(f"per workflow: median {statistics.median(medians) * 1000:.3f} ms, "
          f"p90 {medians[int(0.9 * len(medians))] * 1000:.3f} ms, max {medians[-1] * 1000:.3f} ms")
    print(f"video_wan2_2_14B_animate (44 nodes, subgraphs): median {animate_s * 1000:.3f} ms")
    print(f"target <= 1 ms median per workflow: {'met' if statistics.median(medians) <= 0.001 else 'NOT met'}")


if __name__ == "__main__":
    main()
