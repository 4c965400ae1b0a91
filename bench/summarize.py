"""Render ``bench/README.md``'s table from the benchmark JSONs and the Ped2 reproduction's step records.

Usage::

    python bench/summarize.py [--results bench/results] [--reports reports/ped2] [--out bench/results/summary.md]

Every row names the machine it ran on (from the JSON that holds it); a measurement that has not been run is
left out rather than guessed. ``bench/README.md`` embeds the output between its ``<!-- table -->`` markers,
and the notes that read the table (every number in them taken from the same JSONs) between its
``<!-- notes -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_GPU_FPS = 51.0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(result: dict) -> str:
    """The CPU model, the flags that decide its fast paths, the core count (and the GPU, if any)."""
    machine = result.get("machine", {})
    flags = [f for f in ("avx2", "avx512_bf16", "amx_bf16", "amx_int8") if f in machine.get("cpu_flags", [])]
    gpu = machine.get("gpu")
    return (f"{machine.get('cpu', '?')} [{' '.join(flags) or 'flags not read'}], {machine.get('cores', '?')} cores"
            + (f", {gpu}" if gpu else ", CPU only"))


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def _native_bf16(result: dict) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(result.get("machine", {}).get("cpu_flags", [])))


def detection_rows(results: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    detect = _load(results / "detect.json")
    if detect:
        m = _machine(detect)
        for clip in ("ped2", "synthetic"):
            r = detect["motion"].get(clip)
            if r:
                rows.append((f"motion detector, 1 core, {clip} {r['frame_size_wxh']}", f"{r['frames_per_s']:.0f} frames/s",
                             f">= 300: {_verdict(r['frames_per_s'], 300)}", m))
        for conf, variants in detect["yolo"]["ped2"].items():
            for name, r in variants.items():
                if not isinstance(r, dict):
                    continue
                kept = r.get("found_of_640_old_boxes")
                note = f"; finds {100 * kept:.0f}% of the 640_old boxes" if kept is not None and name != "640_old" else ""
                rows.append((f"YOLOv8n int8 {name} ({r['imgsz'] or 'native'}, {r['openvino_hint']}), "
                             f"{conf.replace('_', ' ')}, Ped2", f"{r['frames_per_s']:.1f} frames/s, "
                             f"{r['boxes_per_frame']:.1f} boxes/frame", f">= 60: {_verdict(r['frames_per_s'], 60)}{note}", m))
        for conf, variants in detect.get("ped2", {}).items():
            if not isinstance(variants, dict):
                continue
            for name, r in variants.items():
                if isinstance(r, dict) and "seconds" in r:
                    rows.append((f"Ped2 YOLO cache ({name}, {conf.replace('_', ' ')}, {r['frames']} frames)",
                                 f"{r['seconds']:.0f} s ({r['frames_per_s']:.1f} frames/s)", "", m))
    coverage = _load(results / "detector_coverage.json")
    if coverage:
        for key, r in coverage["coverage"].items():
            default = key.startswith("hybrid") and "conf 0.25" in r.get("detector", "")
            target = (f">= 97 / >= 70 % at <= 20 boxes: {_verdict(r['iou_0.1'], 0.97)} / {_verdict(r['iou_0.5'], 0.70)}"
                      f" / {_verdict(r['boxes_per_frame'], 20, False)}" if default else "(sensitivity, test labels)")
            rows.append((f"Ped2 anomalous regions covered at IoU 0.1 / 0.3 / 0.5, {r.get('detector', key)}",
                         f"{100 * r['iou_0.1']:.1f} / {100 * r['iou_0.3']:.1f} / {100 * r['iou_0.5']:.1f} %, "
                         f"{r.get('boxes_per_frame', float('nan')):.1f} boxes/frame", target,
                         "(coverage does not depend on the machine)"))
    rule = _load(results / "hybrid_rule.json")
    if rule:
        for r in rule["operating_points"]:
            if r["conf"] in (0.25, 0.5):
                rows.append((f"Ped2 training videos (no labels): moving blobs explained by YOLOv8n at conf {r['conf']}",
                             f"{100 * r['blobs_explained']:.1f}%, {r['boxes_per_frame']:.1f} boxes/frame", "",
                             _machine(rule)))
    return rows


def training_rows(results: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    train = _load(results / "train.json")
    if train:
        m = _machine(train)
        p = train["pipeline"]
        rows.append(("sample pipeline (all four tasks' inputs, Ped2, 2 workers)",
                     f"{p['make_batch_objects_per_s']:,.0f} objects/s", f">= 3,000: {_verdict(p['make_batch_objects_per_s'], 3000)}", m))
        target_ratio = 2.0 if _native_bf16(train) else 1.4
        for r in train["training"]:
            ratio, cpu_ratio = r.get("speedup_vs_fp32"), r.get("cpu_speedup_vs_fp32")
            target = ""
            if ratio is not None:
                target = (f"vs eager fp32 >= {target_ratio}x: {ratio:.2f}x"
                          + (f" (per CPU-s {cpu_ratio:.2f}x)" if cpu_ratio is not None else "")
                          + (f", {_verdict(ratio, target_ratio)}" if r.get("compiled") else ""))
            kind = f"{'compiled' if r.get('compiled') else 'eager'} {r.get('precision', 'fp32')}"
            rows.append((f"training step, {r['arch']}, crop {r['crop']}, batch {r['batch']}, {kind}",
                         f"{r['objects_per_s']:.1f} objects/s", target, m))
        for arch, costs in train.get("compile", {}).items():
            cold, warm = costs.get("cold"), costs.get("warm")
            value = "; ".join(f"{kind} {c['choose_compile_seconds']:.0f} s (first step {c['first_step_seconds']:.0f} s)"
                              for kind, c in (("cold", cold), ("warm", warm)) if c)
            target = (f"warm-start overhead <= 30 s: {warm['start_up_overhead_seconds']:.0f} s, "
                      f"{_verdict(warm['start_up_overhead_seconds'], 30, False)}" if warm else "")
            rows.append((f"compiled path start-up, {arch} (a fresh process: compile check + first step)", value,
                         target, m))
        mem = train.get("memory", {})
        if mem:
            rows.append(("peak RSS while training (all presets, batch 64)", f"{mem['after_training_mb'] / 1024:.1f} GB",
                         f"<= 6 GB: {_verdict(mem['after_training_mb'] / 1024, 6, False)}", m))
        disk = train.get("disk", {})
        if disk:
            extrapolated = " (teacher part extrapolated)" if disk.get("total_is_extrapolated") else ""
            rows.append(("Ped2 caches on disk (detections + teacher logits)", f"{disk['total_bytes'] / 1e6:.0f} MB{extrapolated}",
                         f"<= 1.5 GB: {_verdict(disk['total_bytes'], 1.5e9, False)}", m))
    frames = _load(results / "frames.json")
    if frames:
        m = _machine(frames)
        for store, r in frames["stores"].items():
            training = r.get("training_objects_per_s")
            rows.append((f"decoded-frame store of a video file, {store}, 640x360 colour",
                         f"{r['bytes_per_frame'] / 1e3:.0f} KB/frame; sampler {r['sampler_objects_per_s']:.0f} objects/s"
                         + (f"; training fed by it {training:.1f} objects/s" if training else ""), "", m))
        for name, r in frames["datasets"].items():
            target = {"avenue": 3.0}.get(name)
            rows.append((f"{name} decoded-frame cache, tiles (estimated from the bytes/frame above)",
                         f"~{r['tiles_gb_estimate']:.1f} GB (raw: {r['raw_gb']:.1f} GB)",
                         f"<= {target:g} GB: {_verdict(r['tiles_gb_estimate'], target, False)}" if target else "", m))
    return rows


#: The end-to-end paths of ``bench/infer.py`` (``new`` is the name older JSONs gave ``overlap``).
E2E_PATHS = {"old": "old: detection, then scoring (the video decoded twice)",
             "sequential": "decoded once, detection then scoring",
             "overlap": "decoded once, detection and scoring at once",
             "new": "decoded once, detection and scoring at once"}


def inference_rows(results: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    infer = _load(results / "infer.json")
    if infer and "target_fps" in infer:
        m = _machine(infer)
        for path, fps in infer["detection_fps"].items():
            rows.append((f"detection for scoring, {path} path, Ped2 (JPEG decoding included)", f"{fps:.1f} frames/s", "", m))
        measured = infer.get("end_to_end", [])
        for r in infer["rows"]:
            summed = ("" if measured else f"{r['end_to_end_fps_new_detector']:.1f} frames/s with the detector, ")
            target = (f">= {infer['target_fps']:g}: {_verdict(r['end_to_end_fps_new_detector'], infer['target_fps'])}; "
                      if r["arch"] == "shallow_narrow" and not measured else "")
            rows.append((f"inference {'scoring' if measured else 'end to end'}, {r['arch']} ({r['backend']}), Ped2",
                         f"{summed}{r['scoring_fps']:.1f} frames/s from cached detections "
                         f"({r['objects_per_s']:.0f} objects/s)", f"{target}paper {PAPER_GPU_FPS:.0f} on a GPU", m))
        for r in measured:
            path = E2E_PATHS.get(r["path"], r["path"])
            if r["path"] == infer.get("auto_pipeline"):
                path += " (score-video's choice on this machine)"
            target = (f">= {infer['target_fps']:g}: {_verdict(r['end_to_end_fps'], infer['target_fps'])}; "
                      if r["arch"] == "shallow_narrow" else "")
            ratio = f"{r['speedup_vs_old']:.2f}x the old path; " if r["path"] != "old" else ""
            rows.append((f"inference end to end with the detector, {r['arch']} ({r['backend']}), Ped2, {path}",
                         f"{r['end_to_end_fps']:.1f} frames/s", f"{target}{ratio}paper {PAPER_GPU_FPS:.0f} on a GPU",
                         m))
    return rows


def rows_from_results(results: Path, reports: Path) -> list[tuple[str, str, str, str]]:
    """(measurement, value, target and verdict, machine) rows."""
    rows = detection_rows(results) + training_rows(results) + inference_rows(results)
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
        readme = reports / "README.md"
        machine = "?"
        if readme.is_file():
            line = next((x for x in readme.read_text().splitlines() if "; machine: " in x), "")
            machine = line.split("; machine: ", 1)[-1].split(")", 1)[0] + ")" if line else "?"
        rows.append(("Ped2 reproduction (`./run_all.sh --profile ped2`, CPU budget of params/ped2.yaml)",
                     f"{seconds / 60:.0f} min ({ok}/{len(records)} steps ok)",
                     f"<= 120 min: {_verdict(seconds / 60, 120, False)}", machine))
    return rows


# -- the notes under the table: prose whose every number comes from the JSONs ----------------------------


def _loads(value) -> list[float]:
    """The 1-minute load averages recorded anywhere in a benchmark JSON (start, end, around each run)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("load_average_start", "load_average_end", "load_before", "load_after") and item:
                found.append(float(item[0] if isinstance(item, (list, tuple)) else item))  # a list or one value
            elif key == "load_average_1min_after" and item is not None:
                found.append(float(item))
            else:
                found += _loads(item)
    elif isinstance(value, list):
        for item in value:
            found += _loads(item)
    return found


def machine_note(results: Path) -> str | None:
    loaded = {path.stem: _load(path) for path in sorted(results.glob("*.json"))}
    named = {name: r for name, r in loaded.items() if isinstance(r.get("machine"), dict)}
    if not named:
        return None
    machines = sorted({_machine(r) for r in named.values()})
    versions = {key: sorted({r["versions"][key] for r in named.values() if key in r.get("versions", {})})
                for key in ("python", "torch", "openvino")}
    loads = [load for r in loaded.values() for load in _loads(r)]
    text = (f"* **Machine**: every row names the machine its JSON recorded. The {len(named)} result files that name "
            f"one ran on {' and '.join(machines)}"
            + "".join(f", {key} {' / '.join(v)}" for key, v in versions.items() if v) + ".")
    if loads:
        text += (f" The 1-minute load averages they recorded around their runs range from {min(loads):.1f} to "
                 f"{max(loads):.1f} on its {named[next(iter(named))]['machine'].get('cores', '?')} cores: the "
                 "machine was shared with other work, so wall-clock rates can be lower than on an idle one "
                 "(`detect.json` also records CPU seconds).")
    return text


def detection_note(results: Path) -> str | None:
    detect = _load(results / "detect.json")
    if not detect:
        return None
    motion = detect["motion"]["ped2"]
    yolo = detect["yolo"]["ped2"]["conf_0.25"]
    native = yolo["native"]
    shape = "x".join(map(str, native.get("input_hxw", ["?", "?"])))
    text = (f"* **Detection**: the motion detector runs {motion['frames_per_s']:.0f} frames/s on one core (target "
            f"300). YOLOv8n int8 at conf 0.25 runs {yolo['640']['frames_per_s']:.1f} frames/s at 640x640 and "
            f"{yolo['640_rect']['frames_per_s']:.1f} at the 448x640 rectangle, below the target of 60. The shared "
            "export's own graph has a static 1x3x640x640 input; the rectangle and the native input run that "
            "graph cut before its decoding tail and reshaped (`ssmtl_core/yolo.py`), so any multiple of 32 "
            f"works. The native {shape} input reaches {native['frames_per_s']:.1f} frames/s but finds only "
            f"{100 * native['found_of_640_old_boxes']:.0f}% of the 640x640 boxes: Ped2's people are small, and "
            "YOLOv8n misses many of them near 1x.")
    return text


def disk_note(results: Path) -> str | None:
    train, detect = _load(results / "train.json"), _load(results / "detect.json")
    if not train or "disk" not in train:
        return None
    disk, ped2 = train["disk"], train.get("ped2", {})
    text = (f"* **Disk**: the table's {disk['total_bytes'] / 1e6:.0f} MB is {disk['detections_bytes'] / 1e6:.1f} MB of "
            f"detections (`train.json`'s detector, {ped2.get('detector', '?')}) plus teacher logits measured on "
            f"{disk['teacher_objects_measured']:,} objects ({disk['teacher_bytes_per_object'] / 1e3:.1f} KB each) "
            f"and extrapolated to all {disk['teacher_objects_extrapolated']:,} Ped2 objects "
            f"({disk['teacher_bytes_extrapolated'] / 1e6:.1f} MB).")
    if detect:
        sizes = []
        for conf, variants in detect.get("ped2", {}).items():
            cells = {name: r for name, r in (variants.items() if isinstance(variants, dict) else ())
                     if isinstance(r, dict) and "cache_bytes" in r}
            if cells:
                frames = next(iter(cells.values()))["frames"]
                sizes.append(" / ".join(f"{r['cache_bytes'] / 1e6:.1f}" for r in cells.values())
                             + f" MB ({' / '.join(cells)}) at {conf.replace('_', ' ')} over {frames} frames")
        if sizes:
            text += " A YOLOv8n detection cache of Ped2 (`detect.json`) takes " + "; ".join(sizes) + "."
    return text


#: The Ped2 study's training per architecture (``params/ped2.yaml``): 4,000 objects, 85% of them train.
STUDY_BUDGET_MINUTES, STUDY_TRAIN_OBJECTS, STUDY_VAL_OBJECTS = 9, 3400, 600


def study_epochs(train: dict) -> dict[str, dict[str, float]]:
    """Per preset, the epochs the Ped2 study's 9-minute budget buys on the old path (eager, the precision
    ``auto`` took before) and the new one (compiled), estimated from ``train.json``'s objects/s: an epoch is
    3,400 training objects and 600 validated (eager, forward only), and whole epochs run while the next fits."""
    out: dict[str, dict[str, float]] = {}
    for arch in dict.fromkeys(r["arch"] for r in train["training"] if r["crop"] == 64):
        rows = [r for r in train["training"] if r["arch"] == arch and r["crop"] == 64]
        old = [r for r in rows if not r.get("compiled")]
        new = [r for r in rows if r.get("compiled")]
        if not old or not new:
            continue
        fastest_old = max(old, key=lambda r: r["objects_per_s"])
        validation = new[0].get("validation_objects_per_s")
        for path, row in (("old", fastest_old), ("new", new[0])):
            epoch = STUDY_TRAIN_OBJECTS / row["objects_per_s"] + (STUDY_VAL_OBJECTS / validation if validation else 0)
            out.setdefault(arch, {})[path] = max(1, int(STUDY_BUDGET_MINUTES * 60 // epoch))
            out[arch][f"{path}_epoch_seconds"] = round(epoch)
    return out


def _listed(items) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + (items[-1] if items else "")


def training_note(results: Path) -> str | None:
    train = _load(results / "train.json")
    if not train:
        return None
    speeds = {f"{'compiled ' if r.get('compiled') else ''}{r.get('precision', 'fp32')}": r["objects_per_s"]
              for r in train["training"] if r["arch"] == "shallow_narrow" and r["crop"] == 64}
    objects = train["ped2"]["train_split"]
    waiting = train.get("end_to_end", {}).get("fraction_waiting_for_data")
    hours = _listed(f"{30 * objects / speed / 3600:.1f} hours in {precision}" for precision, speed in speeds.items())
    text = ("* **Training** is compute-bound"
            + (f" (the data pipeline waited {100 * waiting:.1f}% of the time)" if waiting is not None else "")
            + ": shallow_narrow with all four tasks (crop 64, batch 64) trains "
            + _listed(f"{speed:.1f} objects/s in {precision}" for precision, speed in speeds.items())
            + f", so 30 epochs over Ped2's {objects:,} training objects (`train.json`'s motion detections, after the "
            f"validation split) would take {hours} (training steps only) on this CPU. The Ped2 reproduction "
            "trains on a fixed, smaller budget (`params/ped2.yaml`).")
    epochs = study_epochs(train)
    if epochs:
        text += (f" Its {STUDY_BUDGET_MINUTES} minutes per architecture ({STUDY_TRAIN_OBJECTS:,} training objects "
                 f"and {STUDY_VAL_OBJECTS} validated per epoch, estimated from these rates) buy "
                 + _listed(f"{arch} {e['old']} epoch(s) on the old path and {e['new']} compiled" for arch, e
                           in epochs.items())
                 + "; the compiled path's start-up (the compile check and its first step) and the precision "
                 "choice run before the budget's clock starts.")
    return text


def inference_note(results: Path) -> str | None:
    infer, coverage = _load(results / "infer.json"), _load(results / "detector_coverage.json")
    if not infer:
        return None
    rows = {row["backend"]: row for row in infer["rows"] if row["arch"] == "shallow_narrow"}
    fastest = max(rows.values(), key=lambda row: row["objects_per_s"])
    eager = rows.get("torch-cpu")
    per_frame = infer["objects"] / infer["frames"]
    default = next((r for r in (coverage or {}).get("coverage", {}).values()
                    if r.get("detector", "").startswith("yolo+motion") and "conf 0.25" in r["detector"]), None)
    boxes = default["boxes_per_frame"] if default else per_frame
    text = (f"* **Inference**: from cached detections shallow_narrow scores {fastest['objects_per_s']:.0f} objects/s "
            f"({fastest['backend']})" + (f" against {eager['objects_per_s']:.0f} in eager PyTorch" if eager else "")
            + f". Ped2's detections hold {boxes:.1f} boxes per test frame"
            + (" (`yolo+motion` at conf 0.25, `detector_coverage.json`)" if default else "")
            + f", so 20 frames/s needs {20 * boxes:.0f} objects/s: reached, {fastest['scoring_fps']:.1f} frames/s "
            f"on `bench/infer.py`'s {infer['frames']} frames ({per_frame:.1f} objects each).")
    measured = {(r["scorer"], r["path"]): r for r in infer.get("end_to_end", []) if r["arch"] == "shallow_narrow"}
    if not measured:
        return text + (f" With the detector in the loop it is {fastest['end_to_end_fps_new_detector']:.1f} frames/s: "
                       f"detection alone runs {infer['detection_fps']['new']:.1f} frames/s (JPEG decoding included) "
                       "and caps it.")
    best = max(measured.values(), key=lambda r: r["end_to_end_fps"])
    overlap = "overlap" if any(path == "overlap" for _, path in measured) else "new"
    sequential = "sequential" if any(path == "sequential" for _, path in measured) else "old"
    text += (" With the detector in the loop (decoding included, measured) shallow_narrow runs "
             + "; ".join(f"{scorer}: {measured[scorer, sequential]['end_to_end_fps']:.1f} frames/s one step after the "
                         f"other, {measured[scorer, overlap]['end_to_end_fps']:.1f} with detection and scoring at once"
                         for scorer in dict.fromkeys(s for s, _ in measured) if (scorer, overlap) in measured
                         and (scorer, sequential) in measured)
             + f". Detection alone runs {infer['detection_fps']['new']:.1f} frames/s and scoring "
             f"{fastest['scoring_fps']:.1f}: each stage's runtime already uses every core, so on "
             f"{infer['machine'].get('cores', '?')} cores running them at once gains little or loses, and "
             f"{best['end_to_end_fps']:.1f} frames/s "
             f"{'meets' if best['end_to_end_fps'] >= infer['target_fps'] else 'misses'} the target of "
             f"{infer['target_fps']:g}."
             + (f" `score-video` picks `{infer['auto_pipeline']}` here (`score.pipeline = auto`)."
                if infer.get("auto_pipeline") else ""))
    return text


def scaling_note(results: Path) -> str | None:
    scale = _load(results / "scale.json")
    if not scale or scale.get("quick"):
        return None
    train, detect = scale["summary"]["training_objects_per_s"], scale["summary"]["detection_frames_per_s"]
    loop = scale["summary"]["detection_loop_frames_per_s"]
    loads = _loads(scale)
    repeats = sorted({run["repeat"] for run in scale["training"]})
    rounds = []
    for repeat in repeats:
        speed = {run["setup"]: run["objects_per_s"] for run in scale["training"] if run["repeat"] == repeat}
        rounds.append(f"{speed['2 processes x 1 thread'] / speed['1 process x 1 thread']:.2f}x")
    start_up = [run["wall_s"] - run["loop_s"] for run in scale["training"]]
    shard_wall = [run["wall_s"] for run in scale["detection"]]
    return (f"* **Scaling past one process** (`bench/scale.py`, `results/scale.json`; 1-minute load "
            f"{min(loads):.1f}-{max(loads):.1f} during its runs, interleaved and repeated {len(repeats)} times). "
            f"Training ({scale['training_data']}, shallow_narrow, crop 32): 2 torchrun processes of one thread each "
            f"{train['2 processes x 1 thread']:.0f} objects/s against {train['1 process x 1 thread']:.0f} for one "
            f"process of one thread ({' and '.join(rounds)} in the {len(repeats)} rounds) and "
            f"{train['1 process x 2 threads']:.0f} for one process of two threads, whose OpenMP threads wait on each "
            f"other whenever another program holds a core. {scale['detection_data'].capitalize()}'s motion "
            f"detections (one OpenCV thread per process): 2 shards {detect['2 shard(s)']:.0f} frames/s against "
            f"{detect['1 shard(s)']:.0f} for one process ({detect['2 shard(s)'] / detect['1 shard(s)']:.2f}x; "
            f"{loop['2 shard(s)'] / loop['1 shard(s)']:.2f}x in the detection loop alone). What limits it: two "
            "cores that other work already loads, so a second process rarely finds a whole core; and each process "
            f"pays its own start-up ({min(start_up):.0f}-{max(start_up):.0f} s of a training run's wall time is "
            f"outside its loop), which the shards' {min(shard_wall):.0f}-{max(shard_wall):.0f}-second jobs feel.")


def notes_from_results(results: Path) -> list[str]:
    """The bullets of "Reading the table", each left out when its JSON is missing."""
    notes = (machine_note, detection_note, disk_note, training_note, inference_note, scaling_note)
    return [textwrap.fill(text, 110, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
            for note in notes if (text := note(results))]


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
    notes = "\n".join(notes_from_results(Path(args.results))) + "\n"
    readme = REPO / "bench" / "README.md"
    if readme.is_file():
        content = readme.read_text()
        for marker, block in (("table", text), ("notes", notes)):
            if f"<!-- {marker} -->" in content:
                head, _, rest = content.partition(f"<!-- {marker} -->")
                _, _, tail = rest.partition(f"<!-- /{marker} -->")
                content = f"{head}<!-- {marker} -->\n{block}<!-- /{marker} -->{tail}"
        readme.write_text(content)
    print(text)
    print(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
