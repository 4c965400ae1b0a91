"""Render ``bench/README.md``'s table from the benchmark JSONs and the Ped2 reproduction's step records.

Usage::

    python bench/summarize.py [--results bench/results] [--reports reports/ped2] [--out bench/results/summary.md]

Every row names the machine it ran on (from the JSON that holds it); a measurement that has not been run is
left out rather than guessed. ``bench/README.md`` embeds the output between its ``<!-- table -->`` markers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_GPU_FPS = 51.0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(result: dict) -> str:
    machine = result.get("machine", {})
    gpu = machine.get("gpu")
    return f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores" + (f", {gpu}" if gpu else ", CPU only")


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def rows_from_results(results: Path, reports: Path) -> list[tuple[str, str, str, str]]:
    """(measurement, value, target and verdict, machine) rows."""
    rows = []
    detect = _load(results / "detect.json")
    if detect:
        m = _machine(detect)
        for clip in ("ped2", "synthetic"):
            r = detect["motion"].get(clip)
            if r:
                rows.append((f"motion detector, 1 core, {clip} {r['frame_size_wxh']}", f"{r['frames_per_s']:.0f} frames/s",
                             f">= 300: {_verdict(r['frames_per_s'], 300)}", m))
        for tiles in ("tiles_1", "tiles_2", "tiles_4"):
            r = detect["yolo"]["ped2"].get(tiles)
            if r:
                kept = r.get("found_of_tiles1_boxes")
                note = f"; keeps {100 * kept:.0f}% of the tiles=1 boxes" if kept is not None else ""
                rows.append((f"YOLOv8n int8, {tiles.replace('_', '=')}, 2 cores, Ped2", f"{r['frames_per_s']:.1f} frames/s",
                             f">= 60: {_verdict(r['frames_per_s'], 60)}{note}", m))
        cache = detect.get("ped2_cache")
        if cache:
            rows.append(("whole Ped2 detection cache (YOLOv8n int8, 4560 frames)", f"{cache['seconds']:.0f} s "
                         f"({cache['frames_per_s']:.1f} frames/s)", f"< 120 s: {_verdict(cache['seconds'], 120, False)}", m))
    train = _load(results / "train.json")
    if train:
        m = _machine(train)
        p = train["pipeline"]
        rows.append(("sample pipeline (all four tasks' inputs, Ped2, 2 workers)",
                     f"{p['make_batch_objects_per_s']:,.0f} objects/s", f">= 3,000: {_verdict(p['make_batch_objects_per_s'], 3000)}", m))
        for r in train["training"]:
            rows.append((f"training step, {r['arch']}, crop {r['crop']}, batch {r['batch']}",
                         f"{r['objects_per_s']:.1f} objects/s", "", m))
        mem = train.get("memory", {})
        if mem:
            rows.append(("peak RSS while training (all presets, batch 64)", f"{mem['after_training_mb'] / 1024:.1f} GB",
                         f"<= 6 GB: {_verdict(mem['after_training_mb'] / 1024, 6, False)}", m))
        disk = train.get("disk", {})
        if disk:
            extrapolated = " (teacher part extrapolated)" if disk.get("total_is_extrapolated") else ""
            rows.append(("Ped2 caches on disk (detections + teacher logits)", f"{disk['total_bytes'] / 1e6:.0f} MB{extrapolated}",
                         f"<= 1.5 GB: {_verdict(disk['total_bytes'], 1.5e9, False)}", m))
    infer = _load(results / "infer.json")
    if infer:
        m = _machine(infer)
        for r in infer["rows"]:
            target = f">= 20: {_verdict(r['with_yolo_fps'], 20)}" if r["arch"] == "shallow_narrow" and \
                r["backend"] == "openvino" else ""
            rows.append((f"inference end to end, {r['arch']} ({r['backend']}), Ped2",
                         f"{r['with_yolo_fps']:.1f} frames/s with YOLO, {r['from_cached_detections_fps']:.1f} from "
                         f"cached detections ({r['objects_per_s']:.0f} objects/s)",
                         f"{target}; paper {PAPER_GPU_FPS:.0f} on a GPU".lstrip("; "), m))
    scale = _load(results / "scale.json")
    if scale and not scale.get("quick"):
        m = _machine(scale)
        for name, value in scale["summary"]["training_objects_per_s"].items():
            rows.append((f"training, {name} ({scale['training_data']}, shallow_narrow, crop 32)",
                         f"{value:.1f} objects/s", "", m))
        for name, value in scale["summary"]["detection_frames_per_s"].items():
            loop = scale["summary"]["detection_loop_frames_per_s"][name]
            rows.append((f"motion detection, {name} ({scale['detection_data']}, 1 thread each)",
                         f"{value:.0f} frames/s end to end, {loop:.0f} in the detection loop", "", m))
    gpu = _load(results / "gpu.json")
    if gpu and not gpu.get("dry"):
        m = _machine(gpu)
        smoke = gpu.get("smoke", {})
        rows.append(("CUDA smoke run (bf16 autocast, tiny data)", f"{'ok' if smoke.get('ok') else 'FAILED'} in "
                     f"{smoke.get('seconds')} s", "", m))
        for arch, run in gpu.get("protocol", {}).items():
            summary = run.get("summary")
            if summary:
                rows.append((f"--full training, {arch}, Ped2 ({summary['train_objects']} objects)",
                             f"{summary['epochs']}/{summary['epochs_asked']} epochs in {summary['seconds'] / 60:.1f} "
                             f"min ({summary['objects_per_s']:.0f} objects/s)", "30 epochs: "
                             + ("done" if summary["epochs"] >= summary["epochs_asked"] else "cut by the time budget"),
                             m))
        for arch, r in gpu.get("scoring", {}).items():
            auc = f", micro AUC {100 * r['micro_auc']:.1f}" if r.get("micro_auc") is not None else ""
            rows.append((f"scoring end to end from cached detections, {arch} (--full model), Ped2",
                         f"{r['frames_per_s']:.0f} frames/s ({r['objects_per_s']:.0f} objects/s){auc}",
                         f">= 500: {_verdict(r['frames_per_s'], 500)}; paper {PAPER_GPU_FPS:.0f}", m))
    steps = sorted(reports.glob("**/.step.json"))
    if steps:
        records = [json.loads(s.read_text()) for s in steps]
        seconds = sum(r["seconds"] for r in records)
        ok = sum(r["status"] == "ok" for r in records)
        rows.append(("Ped2 reproduction (`./run_all.sh --profile ped2`, CPU budget of params/ped2.yaml)",
                     f"{seconds / 60:.0f} min ({ok}/{len(records)} steps ok)", "", "AMD EPYC, 2 cores, CPU only"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "bench" / "results"))
    parser.add_argument("--reports", default=str(REPO / "reports" / "ped2"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "summary.md"))
    args = parser.parse_args(argv)
    rows = rows_from_results(Path(args.results), Path(args.reports))
    lines = ["| measurement | value | target | machine |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    readme = REPO / "bench" / "README.md"
    if readme.is_file() and "<!-- table -->" in readme.read_text():
        head, _, rest = readme.read_text().partition("<!-- table -->")
        _, _, tail = rest.partition("<!-- /table -->")
        readme.write_text(f"{head}<!-- table -->\n{text}<!-- /table -->{tail}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
