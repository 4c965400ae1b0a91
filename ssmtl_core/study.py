"""Batch reproduction: run every notebook through papermill and render ``reports/<profile>/`` (README, "Results").

``./run_all.sh`` calls :func:`main`. For the chosen profile it reads ``params/<profile>.yaml`` (the notebook
parameters), generates the synthetic dataset when the profile needs it, executes each notebook with its
parameters into ``reports/<profile>/<notebook>[/<arch>]/`` (executed notebook, ``metrics.json``, figures),
and writes ``reports/<profile>/README.md`` with the tables and key figures.

A step is skipped when its notebook, its parameters, the steps it depends on and the package code
(``ssmtl_core``'s source digest) are unchanged since its last successful run (``.step.json`` in its folder,
which also records the commit and uncommitted changes it ran with) and the checkpoint its numbers came from
still exists (a deleted run folder, or a fresh clone without ``runs/``, trains again); ``--keep-stale`` keeps
a step whose only change is the package code, and the README lists it as stale. The README names the one commit the report was
made with, or says loudly at its top which steps (and trainings) were made with which other code. A failing
notebook does not stop the study: it is named at the end and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import settings
from .config import ARCHITECTURES
from .errors import SSMTLError
from .io import code_provenance, machine_info, read_json, write_json
from .report import ENSEMBLE_SUFFIX
from .study_task import REPO, open_or_generate, repo_path, run_name

#: The settings (ssmtl_core/settings.py) ./run_all.sh takes as flags.
RUNNER_SETTINGS = ("PROFILE", "DATA_ROOT", "DETECTOR", "DETECTOR_WEIGHTS", "EPOCHS", "ARCHS", "REPORTS_DIR",
                   "RUNS_DIR", "CACHE_DIR", "DEVICE", "PRECISION", "PROCS")
#: The runner flags handed to every notebook that declares them (the others steer the runner itself).
NOTEBOOK_FLAGS = ("DATA_ROOT", "DETECTOR", "DETECTOR_WEIGHTS", "CACHE_DIR", "DEVICE", "PRECISION", "EPOCHS")
MAX_NOTEBOOK_BYTES = 1_000_000


#: The architecture of the seed study is chosen when the study reaches it: the one whose training (seed 0)
#: ended with the lowest validation loss, which needs no test label (``seeds.arch`` in the params file).
LOWEST_VAL_LOSS = "lowest_val_loss"


@dataclass
class Step:
    """One notebook execution (``seed`` > 0: a repetition of an architecture's training with another seed;
    ``ensemble``: the evaluation of those seeds' runs as one ensemble)."""

    notebook: str
    arch: str | None = None
    depends: list[str] = field(default_factory=list)
    seed: int = 0
    #: the steps whose outputs it reads, when fewer than ``depends`` (a rerun of one of them makes it stale)
    reads: list[str] | None = None
    #: the seeds whose runs this evaluation scores as one ensemble
    ensemble: list[int] | None = None

    @property
    def folder(self) -> str:
        """The step's folder under its notebook's: the run's name, or ``<arch>-ensemble``."""
        return f"{self.arch}{ENSEMBLE_SUFFIX}" if self.ensemble else run_name(self.arch, self.seed)

    @property
    def name(self) -> str:
        return f"{self.notebook}/{self.folder}" if self.arch else self.notebook


def plan(archs: list[str], seeds: list[int] | None = None, seed_arch: str = LOWEST_VAL_LOSS) -> list[Step]:
    """The study's steps in order, with what each depends on.

    Args:
        archs: the architectures trained and evaluated (seed 0).
        seeds: more seeds for one architecture (the seed study), trained and evaluated after the others.
        seed_arch: that architecture, or :data:`LOWEST_VAL_LOSS` to take the one with the lowest validation loss
            (resolved by :func:`resolve_seed_arch` when the study gets there).
    """
    steps = [Step("00_data_and_detections")]
    for nb in ("01_arrow_of_time", "02_motion_irregularity", "03_middle_box_prediction", "04_knowledge_distillation"):
        steps.append(Step(nb, depends=["00_data_and_detections"]))
    for arch in archs:
        steps.append(Step("05_train_architecture", arch, depends=["00_data_and_detections"]))
    for arch in archs:
        steps.append(Step("06_evaluate", arch, depends=[f"05_train_architecture/{arch}"]))
    for seed in seeds or []:
        # It depends on every architecture's training for the choice, but reads only the data.
        steps.append(Step("05_train_architecture", seed_arch, depends=[f"05_train_architecture/{a}" for a in archs],
                          seed=seed, reads=["00_data_and_detections"]))
    for seed in seeds or []:
        steps.append(Step("06_evaluate", seed_arch, depends=[f"05_train_architecture/{run_name(seed_arch, seed)}"],
                          seed=seed))
    if seeds:  # the seeds scored as one: steadier than any one of them (docs/method.md, "Seed ensembles")
        members = [0, *seeds]
        steps.append(Step("06_evaluate", seed_arch, ensemble=members,
                          depends=[f"06_evaluate/{run_name(seed_arch, seed)}" for seed in members]))
    everything = [s.name for s in steps]
    steps.append(Step("07_results_tables", depends=everything))
    steps.append(Step("08_anomaly_gallery", depends=[f"06_evaluate/{a}" for a in archs]))
    return steps


def lowest_validation_loss(losses: Mapping[str, float | None]) -> str | None:
    """The study's one way to choose a model without test labels: the candidate whose training ended with the
    lowest validation loss (the seed study's architecture here, the model notebook 08 shows); None when no
    candidate has a loss."""
    known = {name: loss for name, loss in losses.items() if loss is not None}
    return min(known, key=known.get) if known else None


def resolve_seed_arch(steps: list[Step], reports: Path, archs: list[str]) -> str | None:
    """Replace the placeholder architecture of the seed steps by the trained architecture with the lowest
    validation loss (from the 05 reports); return it (None when there is no seed study or no report yet)."""
    pending = [s for s in steps if s.arch == LOWEST_VAL_LOSS]
    if not pending:
        return None
    losses = {}
    for arch in archs:
        path = reports / "05_train_architecture" / arch / "metrics.json"
        if path.is_file():
            losses[arch] = read_json(path).get("best_val_loss")
    chosen = lowest_validation_loss(losses)
    if chosen is None:
        return None
    for step in steps:
        if step.arch == LOWEST_VAL_LOSS:
            step.arch = chosen
        step.depends = [d.replace(LOWEST_VAL_LOSS, chosen) for d in step.depends]
    return chosen


def load_params(profile: str, quick: bool = False) -> dict[str, Any]:
    """``params/<profile>.yaml``: ``common`` parameters, per-``notebooks`` ones, per-``archs`` ones, and a
    ``quick`` section merged on top with ``--quick``."""
    path = REPO / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise SSMTLError(f"no parameters for profile {profile!r}: {path} is missing.")
    data = yaml.safe_load(path.read_text()) or {}
    _check_params_file(data, path)
    params = {"common": dict(data.get("common", {})), "notebooks": dict(data.get("notebooks", {})),
              "archs": dict(data.get("archs", {})), "list_archs": list(data.get("list_archs", ARCHITECTURES)),
              "seeds": dict(data.get("seeds", {}))}
    if quick:
        q = data.get("quick", {})
        params["common"].update(q.get("common", {}))
        for nb, values in q.get("notebooks", {}).items():
            params["notebooks"].setdefault(nb, {}).update(values)
        # quick settings replace the per-architecture ones (a quick run must not inherit long trainings)
        params["archs"] = dict(q.get("archs", {}))
        params["list_archs"] = list(q.get("list_archs", params["list_archs"]))
        params["seeds"] = dict(q.get("seeds", {}))
    return params


def _check_params_file(data: dict[str, Any], path: Path) -> None:
    """Every key of a params file is a setting of ``ssmtl_core/settings.py`` and reaches a notebook: a key of a
    notebook's own section (``notebooks.<nb>``, ``archs.<arch>.<nb>``) is a parameter of that notebook, a
    ``common`` key one of some notebook (a typo or a parameter no notebook has is an error, not a silently kept
    default)."""
    quick = data.get("quick", {})
    sections: list[tuple[str, dict, str | None]] = [("common", data.get("common", {}), None),
                                                    ("quick.common", quick.get("common", {}), None)]
    for prefix, notebooks in (("notebooks", data.get("notebooks", {})), ("quick.notebooks", quick.get("notebooks", {}))):
        sections += [(f"{prefix}.{nb}", values, nb) for nb, values in notebooks.items()]
    for prefix, archs in (("archs", data.get("archs", {})), ("quick.archs", quick.get("archs", {}))):
        sections += [(f"{prefix}.{arch}.{nb}", values, nb) for arch, by_nb in archs.items()
                     for nb, values in by_nb.items()]
    for where, values, notebook in sections:
        settings.check_parameters(values or {}, f"{path.name}: {where}")
        if notebook is not None:
            _filter_parameters(_notebook_path(notebook, f"{path.name}: {where}"), {}, own=values or {})
            continue
        declared = set().union(*(declared_parameters(nb) for nb in sorted((REPO / "notebooks").glob("*.ipynb"))))
        unused = sorted(set(values or {}) - declared)
        if unused:
            raise SSMTLError(f"{path.name}: {where}: no notebook has a parameter {', '.join(unused)}, so the value "
                             "would reach none: remove it, or add the parameter to the notebooks that should read it.")


def _notebook_path(notebook: str, where: str) -> Path:
    path = REPO / "notebooks" / f"{notebook}.ipynb"
    if not path.is_file():
        raise SSMTLError(f"{where}: there is no notebook {path.relative_to(REPO)}; the sections under notebooks and "
                         "archs are named after the notebooks (e.g. 05_train_architecture).")
    return path


def notebook_parameters(step: Step, params: dict[str, Any]) -> set[str]:
    """The parameters written for this step's notebook alone (``notebooks.<nb>``, ``archs.<arch>.<nb>``): the
    notebook must declare every one of them (:func:`_filter_parameters`)."""
    own = set(params["notebooks"].get(step.notebook, {}))
    if step.arch:
        own |= set(params["archs"].get(step.arch, {}).get(step.notebook, {}))
    return own


def step_parameters(step: Step, params: dict[str, Any], reports: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters one notebook run gets: common, then notebook, then arch settings, then CLI flags."""
    values = dict(params["common"])
    values.update(params["notebooks"].get(step.notebook, {}))
    if step.arch:
        values.update(params["archs"].get(step.arch, {}).get(step.notebook, {}))
        values["ARCH"] = step.arch
        if step.seed:
            values["SEED"] = step.seed
        if step.ensemble:
            values["ENSEMBLE_SEEDS"] = ",".join(str(seed) for seed in step.ensemble)
    values.update({k: v for k, v in overrides.items() if v is not None})
    out = reports / step.notebook / step.folder if step.arch else reports / step.notebook
    values["OUT_DIR"] = str(out)
    if step.notebook in ("07_results_tables", "08_anomaly_gallery"):
        values["REPORTS_DIR"] = str(reports)
        values["ARCHS"] = ",".join(params["list_archs"])
    return values


def _notebook_digest(path: Path) -> str:
    """A hash of the notebook's code and text, not its outputs or metadata."""
    nb = json.loads(path.read_text())
    cells = [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()[:16]


def declared_parameters(path: Path) -> set[str]:
    """The names a notebook's ``parameters`` cell assigns."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines()
            if "=" in line and not line.lstrip().startswith("#")}


def _filter_parameters(path: Path, values: dict[str, Any], own: Iterable[str] = ()) -> dict[str, Any]:
    """The parameters the notebook declares (papermill would inject the others as new variables).

    Values meant for every notebook (``common``, the runner's flags) go to the notebooks that declare them;
    ``own`` names those written for this notebook alone, and one it does not declare is an error, never dropped.
    """
    names = declared_parameters(path)
    undeclared = sorted(set(own) - names)
    if undeclared:
        raise SSMTLError(f"notebook {path.stem} has no parameter {', '.join(undeclared)}, which the params file "
                         f"sets for it: add it to the parameters cell of notebooks/{path.name}, or remove it from "
                         "the params file.")
    return {k: v for k, v in values.items() if k in names}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_key(notebook: Path, values: dict[str, Any], depends: list[str | None]) -> str:
    """What a step reads besides the package code: its notebook's code and text, its parameters, and the inputs
    keys of the steps it depends on (the whole key of a step before steps were keyed on the code)."""
    return _digest({"notebook": _notebook_digest(notebook), "parameters": values, "depends": depends})


def step_key(inputs: str, source_digest: str) -> str:
    """A step's key: its inputs (:func:`inputs_key`) and the package code it runs (``ssmtl_core``'s source
    digest, :func:`ssmtl_core.io.source_digest`): a step reruns when either changed."""
    return _digest({"inputs": inputs, "code": source_digest})


def code_label(code: dict[str, Any] | None, digest: bool = False) -> str:
    """``commit 1a2b3c4d5e6f``, ``... with uncommitted changes to a.py, b.py``, or why there is no commit, for
    logs and READMEs (``digest``: add the package source digest)."""
    if not code:
        return "unknown code (made before results recorded their commit)"
    text = f"commit `{code['commit'][:12]}`" if code.get("commit") else f"no commit ({code.get('note', 'unknown')})"
    if code.get("dirty"):
        named = ", ".join(code.get("changed") or [])
        more = (code.get("changed_count") or 0) - len(code.get("changed") or [])
        text += f" with uncommitted changes to {named}{f' and {more} more' if more > 0 else ''}"
    if digest or not code.get("commit"):
        text += f" (package source `{str(code.get('source_digest'))[:12]}`)"
    return text


def missing_checkpoints(folder: Path) -> list[str]:
    """The checkpoints a step's ``metrics.json`` names (its training's, ``train.checkpoint``; the evaluated
    one's, ``checkpoint.path``) that no longer exist: such a step's numbers cannot be reproduced or reused."""
    metrics = _metrics(folder)
    named = [(metrics.get("train") or {}).get("checkpoint"), (metrics.get("checkpoint") or {}).get("path")]
    return [path for path in named if isinstance(path, str) and path and not Path(path).is_file()]


def run_step(step: Step, values: dict[str, Any], key: str, force: bool, log,
             depends_finished: str | None = None, own: Iterable[str] = (), inputs: str | None = None,
             keep_stale: bool = False, code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute one notebook with papermill unless its key is unchanged and no step it depends on ran after it
    (``depends_finished``: the latest finishing time of those steps); return its status record.

    Args:
        own: the parameters written for this notebook alone (:func:`_filter_parameters`).
        inputs: the step's :func:`inputs_key`; with ``keep_stale`` a step whose inputs are unchanged is kept
            though the package code changed (``stale`` in the record).
        code: the code this runner runs (:func:`ssmtl_core.io.code_provenance`), recorded in ``.step.json``
            unless the notebook's ``metrics.json`` names its own (code changed while the study ran).
    """
    import papermill as pm  # heavy (jupyter): only a step that runs needs it

    code = code or code_provenance()
    source = REPO / "notebooks" / f"{step.notebook}.ipynb"
    out = repo_path(values["OUT_DIR"])
    record_path = out / ".step.json"
    why = ""
    if not force and record_path.is_file():
        record = read_json(record_path)
        newer_inputs = depends_finished is not None and depends_finished > str(record.get("finished", ""))
        reusable = record.get("status") == "ok" and (out / "metrics.json").is_file() and not newer_inputs
        missing = missing_checkpoints(out) if reusable else []
        if missing:  # its training's run folder was deleted (or this is a fresh clone): train again
            reusable, why = False, f" (its checkpoint {missing[0]} is gone)"
        if reusable and record.get("key") == key:
            log(f"[skip] {step.name}: unchanged since {record.get('finished')}")
            return {**record, "skipped": True}
        # A record from before steps were keyed on the code holds its inputs key as its key.
        if record.get("key") != key and inputs is not None and record.get("inputs_key", record.get("key")) == inputs:
            made_by = code_label(record.get("code")).replace("`", "")
            if keep_stale and reusable:
                log(f"[STALE] {step.name}: kept (--keep-stale) though the package code changed; made by {made_by} "
                    f"on {record.get('finished')}")
                return {**record, "skipped": True, "stale": True}
            why = why or f" (the package code changed since its run by {made_by})"
    out.mkdir(parents=True, exist_ok=True)
    # An earlier run's numbers must not outlive a failed rerun: the results tables read every metrics.json.
    (out / "metrics.json").unlink(missing_ok=True)
    executed = out / f"{step.notebook}.ipynb"
    log(f"[run]  {step.name} -> {out}{why}")
    started = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(str(source), str(executed), parameters=_filter_parameters(source, values, own),
                            cwd=str(REPO), kernel_name="python3", progress_bar=False, log_output=False)
    except Exception as exc:  # papermill re-raises the notebook's error; the study goes on
        status, error = "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
        log(f"[FAIL] {step.name}: {error}")
    seconds = round(time.perf_counter() - started, 1)
    if executed.is_file() and executed.stat().st_size > MAX_NOTEBOOK_BYTES:
        # Large executed notebooks stay on disk but out of git (.gitignore: *.large.ipynb).
        executed.replace(executed.with_suffix(".large.ipynb"))
    record = {"step": step.name, "key": key, "inputs_key": inputs, "status": status, "error": error,
              "seconds": seconds, "finished": dt.datetime.now().isoformat(timespec="seconds"),
              "code": _metrics(out).get("code") or code, "parameters": values}
    write_json(record_path, record)
    log(f"       {step.name}: {status} in {seconds:.0f}s")
    return record


def _metrics(folder: Path) -> dict[str, Any]:
    try:
        data = read_json(folder / "metrics.json")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def made_with(record: dict[str, Any], folder: Path | None = None) -> list[tuple[str, dict[str, Any] | None]]:
    """The code that made a step's numbers: (what, code) for the notebook's run (its ``metrics.json``, else its
    ``.step.json``) and, where it reports a training (01-06), for that training and for the session it resumed
    (a run folder reused or resumed across code changes keeps the model of the code that trained it).

    Args:
        record: the step's record (``.step.json``).
        folder: the step's folder, when not the record's ``OUT_DIR`` (a report moved or copied).
    """
    metrics = _metrics(folder or repo_path(record["parameters"]["OUT_DIR"]))
    parts: list[tuple[str, dict[str, Any] | None]] = [("", metrics.get("code") or record.get("code"))]
    training = metrics.get("train") or metrics.get("training")
    if isinstance(training, dict) and training:
        parts.append(("its training", training.get("code")))
        if "resumed_from_code" in training:
            parts.append(("its training's first sessions", training["resumed_from_code"]))
    return parts


def code_report(reports: Path, records: list[dict]) -> tuple[list[str], list[str]]:
    """The README's account of the code behind a report: (lines naming the one commit, or a loud warning
    listing which steps were made with which code; the warning's lines for the terminal, empty when the
    whole report comes from one commit with no uncommitted changes). Steps of the folder that this invocation
    did not run (``--only``) count too: the results tables read their numbers."""
    seen = {r.get("step") for r in records}
    everything: list[tuple[dict, Path | None]] = [(r, None) for r in records if r.get("key")]
    for path in sorted(reports.rglob(".step.json")):
        with contextlib.suppress(OSError, ValueError):
            other = read_json(path)
            if isinstance(other, dict) and other.get("step") not in seen and other.get("key"):
                everything.append((other, path.parent))
    groups: dict[str, list[str]] = {}
    codes: dict[str, dict[str, Any] | None] = {}
    for record, folder in everything:
        for what, code in made_with(record, folder):
            group = (json.dumps([code.get("commit"), bool(code.get("dirty")), code.get("source_digest")])
                     if code else "unknown")
            groups.setdefault(group, []).append(record["step"] + (f" ({what})" if what else ""))
            codes[group] = code
    if not groups:
        return [], []
    if len(groups) == 1:
        (group, steps), = groups.items()
        code = codes[group]
        if code and code.get("commit") and not code.get("dirty"):
            return [f"Code: commit `{code['commit']}` (no uncommitted changes; ssmtl-study "
                    f"{code.get('package_version')}, package source sha256 `{code.get('source_digest', '')[:16]}`): "
                    "every step below, and every training it reports, was made with it.", ""], []
    warning = ["**WARNING: MIXED OR UNCOMMITTED CODE.** The numbers of this report were not all made by one "
               "committed version of the code:"]
    listing = [f"- {code_label(codes[group], digest=len(groups) > 1)}: {', '.join(steps)}"
               for group, steps in groups.items()]
    advice = ("Commit, then rerun `./run_all.sh` with this report's flags (without `--keep-stale`; delete the "
              "run folders of trainings made by other code) so that every number comes from one commit.")
    lines = ["> " + warning[0], ">", *[f"> {line}" for line in listing], ">", f"> {advice}", ""]
    return lines, [warning[0].replace("**", ""), *[f"  {line.replace('`', '')}" for line in listing],
                   f"  {advice.replace('`', '')}"]


def compose_readme(reports: Path, profile: str, records: list[dict], command: str, total_seconds: float) -> Path:
    """``reports/<profile>/README.md``: how it was made (the command, the machine, the commit), the tables, the
    key figures, each step's status and commit; a report made with mixed or uncommitted code says so at the top
    (:func:`code_report`)."""
    code_lines, _ = code_report(reports, records)
    mixed = bool(code_lines) and code_lines[0].startswith(">")
    stale = [r["step"] for r in records if r.get("stale")]
    loud = [f"> **STALE:** kept with `--keep-stale` though the package code changed since they ran: "
            f"{', '.join(stale)} (their code is in the Steps table).", ""] if stale else []
    lines = [f"# SSMTL study — `{profile}` profile", "", *(code_lines if mixed else []), *loud,
             f"Produced by `{command}` on {dt.date.today().isoformat()}; machine: "
             f"{machine_info().get('cpu')} ({machine_info().get('cores')} cores"
             f"{', GPU ' + machine_info()['gpu'] if machine_info().get('gpu') else ', no GPU'}). "
             f"Wall time of this invocation: {total_seconds / 60:.1f} min; all steps from scratch (the sum of each "
             f"step's last run): {sum(r['seconds'] for r in records) / 60:.1f} min.", "",
             *([] if mixed else code_lines)]
    notes = REPO / "params" / f"{profile}.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    tables = reports / "07_results_tables" / "tables.md"
    if tables.is_file():
        lines += [tables.read_text().strip(), ""]
    for figure, caption in (("07_results_tables/results.png", "Our numbers next to the paper's"),
                            ("07_results_tables/ablation.png", "Task ablation"),
                            ("08_anomaly_gallery/score_curves.png", "Frame scores over the test videos"),
                            ("08_anomaly_gallery/most_anomalous.png", "Most and least anomalous objects"),
                            ("08_anomaly_gallery/heatmaps.png", "Anomaly maps on the most anomalous frames")):
        if (reports / figure).is_file():
            lines += [f"### {caption}", "", f"![{caption}]({figure})", ""]
    lines += ["## Steps", "", "| step | status | seconds | code | folder |", "|---|---|---|---|---|"]
    for r in records:
        status = r["status"] + (" (kept STALE: made by other code, --keep-stale)" if r.get("stale")
                                else " (skipped: unchanged)" if r.get("skipped") else "")
        if r.get("error"):
            status += f": {r['error']}"
        folder = Path(r["parameters"]["OUT_DIR"]).resolve()
        try:
            folder = folder.relative_to(reports.resolve())
        except ValueError:
            pass
        code = "; ".join(f"{what + ': ' if what else ''}{code_label(c)}"
                         for what, c in (made_with(r) if r.get("key") else []))
        lines.append(f"| {r['step']} | {status} | {r['seconds']} | {code} | `{folder}` |")
    path = reports / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``./run_all.sh [--profile P] [--data-root PATH] [--detector D] [--detector-weights PATH] [--epochs N]
    [--quick|--full]``."""
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    # Flags that are settings take their names from ssmtl_core/settings.py (the notebook parameter they set
    # is the one of the same row); defaults come from params/<profile>.yaml.
    settings.add_arguments(parser, RUNNER_SETTINGS, PROFILE="synthetic")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run in a few minutes")
    parser.add_argument("--full", action="store_true",
                        help="the paper's protocol: every training object, 30 epochs (unless --epochs); a GPU job")
    parser.add_argument("--only", help="comma-separated notebooks or steps to run (e.g. 07_results_tables)")
    parser.add_argument("--force", action="store_true", help="rerun steps even when unchanged")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep steps whose notebook, parameters and inputs are unchanged though the package code "
                             "changed (the README lists them as stale); by default they rerun")
    args = parser.parse_args(argv)
    given = settings.args_to_parameters(args, RUNNER_SETTINGS)
    profile = given["PROFILE"]
    if given["PROCS"] is not None:
        # Notebooks cannot run under torchrun: their kernels (which inherit this environment) start the training
        # processes themselves (ssmtl_core.study_task.train_run). How fast, not what: no step reruns for it.
        from .distributed import PROCS_ENV  # torch: the runner needs it only with --procs

        if given["PROCS"] < 1:
            raise SSMTLError(f"--procs {given['PROCS']}: at least 1 training process.")
        os.environ[PROCS_ENV] = str(given["PROCS"])

    params = load_params(profile, args.quick)
    archs = given["ARCHS"].split(",") if given["ARCHS"] else params["list_archs"]
    params["list_archs"] = archs
    if args.full and args.quick:
        raise SSMTLError("--full and --quick contradict each other: choose one.")
    suffix = "-quick" if args.quick else "-full" if args.full else ""
    reports = repo_path(given["REPORTS_DIR"] or f"reports/{profile}{suffix}")
    full = {"MAX_OBJECTS": 0, "FRAME_STRIDE": 0, "SCHEDULE": "constant"} if args.full else {}
    # the notebook parameters every step gets from the command line (None: not given)
    overrides = {**full, **{name: given[name] for name in NOTEBOOK_FLAGS},
                 "EPOCHS": given["EPOCHS"] or (30 if args.full else None),
                 "RUNS_DIR": given["RUNS_DIR"] or params["common"].get("RUNS_DIR", f"runs/{profile}{suffix}")}
    command = "./run_all.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    log = print
    log(f"SSMTL study, profile {profile}{' (quick)' if args.quick else ''}: reports in {reports}")
    if profile == "synthetic":
        values = {**params["common"], **{k: v for k, v in overrides.items() if v is not None}}
        open_or_generate("synthetic", values.get("DATA_ROOT", "data/synthetic"), values.get("SYNTH_SIZE", "default"),
                         int(values.get("SYNTH_SEED", 0)))
    started = time.perf_counter()
    code = code_provenance()
    log(f"code: {code_label(code, digest=True).replace('`', '')}")
    keys: dict[str, str] = {}
    inputs_keys: dict[str, str] = {}
    finished: dict[str, str] = {}  # when each step's current outputs were made
    records = []
    only = set(args.only.split(",")) if args.only else None
    seeds = [int(x) for x in params["seeds"].get("values", [])]
    steps = plan(archs, seeds, params["seeds"].get("arch", LOWEST_VAL_LOSS))
    declared = set().union(*(declared_parameters(REPO / "notebooks" / f"{s.notebook}.ipynb") for s in steps))
    for name in NOTEBOOK_FLAGS:
        if given[name] is not None and name not in declared:
            log(f"note: {settings.setting(name).flags[0]} reaches no notebook of this study (none has a {name} "
                "parameter): it changes nothing")
    for step in steps:
        if step.arch == LOWEST_VAL_LOSS:
            chosen = resolve_seed_arch(steps, reports, archs)
            if chosen is None:
                if only and step.notebook not in only:  # not asked for: nothing failed
                    continue
                records.append({"step": step.name, "status": "failed", "seconds": 0, "parameters": {"OUT_DIR": ""},
                                "error": "no trained architecture to repeat with other seeds"})
                continue
            log(f"seed study: {chosen} (the lowest validation loss of {', '.join(archs)}), seeds {seeds}")
        values = step_parameters(step, params, reports, overrides)
        notebook = REPO / "notebooks" / f"{step.notebook}.ipynb"
        inputs_keys[step.name] = inputs_key(notebook, values, [inputs_keys.get(d) for d in step.depends])
        keys[step.name] = step_key(inputs_keys[step.name], code["source_digest"])
        if only and step.notebook not in only and step.name not in only:
            continue
        # A dependency rerun with an unchanged key (a failed step retried) still makes this step stale.
        inputs = step.depends if step.reads is None else step.reads
        depends_finished = max((finished[d] for d in inputs if d in finished), default=None)
        record = run_step(step, values, keys[step.name], args.force, log, depends_finished,
                          notebook_parameters(step, params), inputs_keys[step.name], args.keep_stale, code)
        finished[step.name] = str(record.get("finished", ""))
        records.append(record)
    total = time.perf_counter() - started
    readme = compose_readme(reports, profile, records, command, total)
    failed = [r["step"] for r in records if r["status"] != "ok"]
    log(f"done in {total / 60:.1f} min; {readme}")
    for line in code_report(reports, records)[1]:  # the README's warning, on the terminal too
        log(line)
    if failed:
        log(f"FAILED notebooks: {', '.join(failed)} (executed copies with the error are in their folders)")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SSMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
