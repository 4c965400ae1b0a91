"""Every number says which code made it: ``ssmtl_core.io.code_provenance`` on a real git checkout (clean, with
uncommitted changes, a detached HEAD), outside one and without git; the files that carry it; and the runner,
which reruns a step when the package code changed and says loudly when a report mixes code."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ssmtl_core import io, report, study
from ssmtl_core.io import code_provenance, describe_code, source_digest, write_json

ROOT = Path(__file__).resolve().parents[1]
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([GIT, "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A tiny checkout shaped like the project: a package, a notebook, a committed report and a README."""
    repo = tmp_path / "repo"
    for name, text in (("ssmtl_core/__init__.py", "'''pkg'''\n"), ("ssmtl_core/data/frames.py", "A = 1\n"),
                       ("notebooks/00.ipynb", "{}\n"), ("reports/synthetic/metrics.json", "{}\n"),
                       ("README.md", "# readme\n"), ("bench/results/detect.json", "{}\n")):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


@needs_git
def test_a_clean_checkout_names_its_commit(checkout):
    info = describe_code(checkout / "ssmtl_core")
    assert info["commit"] == _git(checkout, "rev-parse", "HEAD") and len(info["commit"]) == 40
    assert info["dirty"] is False and info["changed"] == [] and info["changed_count"] == 0
    assert info["source_digest"] == source_digest(checkout / "ssmtl_core") and len(info["source_digest"]) == 64
    assert info["package_version"] == io.__version__ and "note" not in info


@needs_git
def test_uncommitted_code_is_dirty_and_named_but_results_and_prose_are_not(checkout):
    clean = describe_code(checkout / "ssmtl_core")
    # regenerated reports, benchmark JSONs and edited prose do not change what code made a number
    (checkout / "reports/synthetic/metrics.json").write_text('{"micro_auc": 0.9}\n')
    (checkout / "bench/results/detect.json").write_text('{"x": 1}\n')
    (checkout / "README.md").write_text("# edited\n")
    assert describe_code(checkout / "ssmtl_core")["dirty"] is False
    (checkout / "ssmtl_core/data/frames.py").write_text("A = 2\n")
    (checkout / "notebooks/00.ipynb").write_text('{"cells": []}\n')
    info = describe_code(checkout / "ssmtl_core")
    assert info["commit"] == clean["commit"] and info["dirty"] is True
    assert info["changed"] == ["notebooks/00.ipynb", "ssmtl_core/data/frames.py"] and info["changed_count"] == 2
    assert info["source_digest"] != clean["source_digest"], "the digest follows the package's content"
    (checkout / "ssmtl_core/data/frames.py").write_text("A = 1\n")
    assert describe_code(checkout / "ssmtl_core")["source_digest"] == clean["source_digest"]


@needs_git
def test_many_changed_files_are_counted_and_a_few_named(checkout):
    for k in range(8):
        (checkout / f"ssmtl_core/m{k}.py").write_text(f"K = {k}\n")
    _git(checkout, "add", "ssmtl_core")
    _git(checkout, "commit", "-q", "-m", "more")
    for k in range(8):
        (checkout / f"ssmtl_core/m{k}.py").write_text(f"K = {k + 1}\n")
    _git(checkout, "mv", "ssmtl_core/m0.py", "ssmtl_core/a_renamed.py")  # a staged rename: one entry, two paths
    info = describe_code(checkout / "ssmtl_core")
    assert info["changed_count"] == 8 and len(info["changed"]) == io.MAX_CHANGED_NAMED
    assert info["changed"][0] == "ssmtl_core/a_renamed.py", "the rename is one entry, its old name no other"


@needs_git
def test_a_detached_head_and_a_checkout_without_commits(checkout, tmp_path):
    head = _git(checkout, "rev-parse", "HEAD")
    (checkout / "ssmtl_core/x.py").write_text("X = 1\n")
    _git(checkout, "add", "ssmtl_core/x.py")
    _git(checkout, "commit", "-q", "-m", "second")
    _git(checkout, "checkout", "-q", "--detach", head)
    assert describe_code(checkout / "ssmtl_core")["commit"] == head
    empty = tmp_path / "empty"
    (empty / "ssmtl_core").mkdir(parents=True)
    (empty / "ssmtl_core" / "a.py").write_text("A = 1\n")
    _git(empty, "init", "-q")
    info = describe_code(empty / "ssmtl_core")
    assert info["commit"] is None and info["note"] == "the checkout has no commit yet"


@needs_git
def test_outside_a_checkout_the_digest_still_names_the_code(checkout, tmp_path):
    copy = tmp_path / "unpacked" / "ssmtl_core"  # a tarball or a wheel: the same files, no .git
    shutil.copytree(checkout / "ssmtl_core", copy)
    info = describe_code(copy)
    assert info["commit"] is None and info["dirty"] is None and "not a git checkout" in info["note"]
    assert info["source_digest"] == describe_code(checkout / "ssmtl_core")["source_digest"]
    # a package installed somewhere inside another checkout (a virtualenv in it) is not that checkout's code
    inside = checkout / ".venv" / "site-packages" / "ssmtl_core"
    shutil.copytree(checkout / "ssmtl_core", inside)
    nested = describe_code(inside)
    assert nested["commit"] is None and "lies inside" in nested["note"]


def test_without_git_the_commit_is_none_and_nothing_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    info = describe_code(ROOT / "ssmtl_core")
    assert info["commit"] is None and info["dirty"] is None and info["note"] == "git is not installed"
    assert info["source_digest"] == source_digest(ROOT / "ssmtl_core")


def test_the_package_describes_itself_once_per_process():
    # refreshed: an earlier test may have cached it before the package's files changed (work in progress)
    first = code_provenance(refresh=True)
    assert first["source_digest"] == source_digest(ROOT / "ssmtl_core")
    first["changed"].append("mutated by a caller")
    assert code_provenance() == {**first, "changed": first["changed"][:-1]}, "cached, and copies are handed out"
    if GIT and (ROOT / ".git").exists():
        assert first["commit"] == _git(ROOT, "rev-parse", "HEAD")


def test_metrics_and_benchmark_json_carry_the_code(tmp_path, monkeypatch):
    path = report.write_metrics(tmp_path / "nb", "00_data", {"micro_auc": 0.5}, {"OUT_DIR": "x"})
    assert json.loads(path.read_text())["code"] == code_provenance()
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.results import finish

    result = {"load_average_start": [0.0, 0.0, 0.0], "machine": {"cores": 2}, "date": "today", "notes": []}
    finish(result, lambda r: "| table |", tmp_path / "bench.json", "cpu")
    assert json.loads((tmp_path / "bench.json").read_text())["code"] == code_provenance()


# -- the runner ---------------------------------------------------------------------------------------------


def _code(commit: str, digest: str, dirty: bool = False) -> dict:
    return {"commit": commit * 40, "dirty": dirty, "changed": ["ssmtl_core/train.py"] if dirty else [],
            "changed_count": int(dirty), "package_version": "0.1.0", "source_digest": digest * 64}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """``./run_all.sh --quick`` with every notebook replaced by one that writes the code it ran (the kernel's
    ``metrics.json``) and, for a training, the code its model was trained with."""
    import papermill

    state = {"code": _code("a", "1"), "trained_by": {}}
    monkeypatch.setattr(study, "code_provenance", lambda refresh=False: dict(state["code"]))
    monkeypatch.setattr(study, "open_or_generate", lambda *args, **kwargs: None)

    def execute(source, executed, parameters=None, **_kwargs):
        out = Path(executed).parent
        metrics = {"best_val_loss": 0.1, "code": state["code"]}
        if Path(source).stem.startswith("05"):
            metrics["train"] = {"code": state["trained_by"].get(out.name, state["code"])}
        write_json(out / "metrics.json", metrics)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    reports = tmp_path / "reports"
    argv = ["--quick", "--archs", "shallow_narrow", "--reports", str(reports), "--runs", str(tmp_path / "runs"),
            "--cache", str(tmp_path / "cache"), "--data-root", str(tmp_path / "data")]
    return state, argv, reports


def _steps(reports: Path) -> int:
    """How many steps the quick study has (00-04, 05 and 06 of shallow_narrow and of its seed-1 repetition, ...)."""
    return len(list(reports.rglob(".step.json")))


def test_a_step_reruns_when_the_package_code_changed(runner, capsys):
    state, argv, reports = runner
    assert study.main(argv) == 0
    steps = _steps(reports)
    assert capsys.readouterr().out.count("[run]") == steps >= 11
    readme = (reports / "README.md").read_text()
    assert f"Code: commit `{'a' * 40}` (no uncommitted changes" in readme and "WARNING" not in readme
    record = json.loads((reports / "00_data_and_detections" / ".step.json").read_text())
    assert record["code"] == _code("a", "1") and record["inputs_key"]
    assert study.main(argv) == 0
    assert capsys.readouterr().out.count("[skip]") == steps, "same code, same inputs: skipped"
    state["code"] = _code("b", "2")
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("[run]") == out.count("the package code changed since its run by commit aaaaaaaaaaaa") == steps
    assert f"Code: commit `{'b' * 40}`" in (reports / "README.md").read_text()


def test_keep_stale_keeps_steps_and_says_so(runner, capsys):
    state, argv, reports = runner
    assert study.main(argv) == 0
    state["code"] = _code("b", "2")
    capsys.readouterr()
    assert study.main([*argv, "--keep-stale"]) == 0
    assert capsys.readouterr().out.count("[STALE]") == _steps(reports)
    readme = (reports / "README.md").read_text()
    assert "**STALE:** kept with `--keep-stale`" in readme and "kept STALE" in readme
    assert json.loads((reports / "07_results_tables" / ".step.json").read_text())["code"]["commit"] == "a" * 40


def test_a_report_made_with_mixed_code_says_so_at_the_top(runner, capsys):
    state, argv, reports = runner
    state["trained_by"]["shallow_narrow"] = None  # its model was trained before trainings recorded their code
    assert study.main(argv) == 0
    state["code"] = _code("b", "2", dirty=True)
    capsys.readouterr()
    assert study.main([*argv, "--only", "07_results_tables"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: MIXED OR UNCOMMITTED CODE" in out, "./run_all.sh prints the warning too"
    readme = (reports / "README.md").read_text()
    top = readme.split("Produced by")[0]
    assert "**WARNING: MIXED OR UNCOMMITTED CODE.**" in top
    assert "commit `bbbbbbbbbbbb` with uncommitted changes to ssmtl_core/train.py" in top
    listing = {line.split(": ")[0]: line for line in top.splitlines() if line.startswith("> - ")}
    assert "07_results_tables" in listing["> - commit `bbbbbbbbbbbb` with uncommitted changes to ssmtl_core/train.py "
                                         "(package source `222222222222`)"]
    assert "00_data_and_detections" in listing["> - commit `aaaaaaaaaaaa` (package source `111111111111`)"]
    unknown = listing["> - unknown code (made before results recorded their commit)"]
    assert "05_train_architecture/shallow_narrow (its training)" in unknown


def test_a_record_from_before_code_keys_is_stale(tmp_path, monkeypatch):
    import papermill

    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda source, executed, **_: (
        ran.append(source), write_json(Path(executed).parent / "metrics.json", {"ok": True})))
    out = tmp_path / "07_results_tables"
    inputs = "0123456789abcdef"
    # what the runner wrote before: the inputs key was the whole key, and no code
    write_json(out / ".step.json", {"step": "07_results_tables", "key": inputs, "status": "ok", "seconds": 1,
                                    "finished": "2025-01-01T00:00:00", "parameters": {"OUT_DIR": str(out)}})
    write_json(out / "metrics.json", {"ok": True})
    step, values, key = study.Step("07_results_tables"), {"OUT_DIR": str(out)}, study.step_key(inputs, "1" * 64)
    kept = study.run_step(step, values, key, False, lambda *_: None, inputs=inputs, keep_stale=True,
                          code=_code("a", "1"))
    assert kept["stale"] and not ran
    lines, warning = study.code_report(tmp_path, [kept])
    assert "unknown code (made before results recorded their commit)" in "\n".join(lines) and warning
    study.run_step(step, values, key, False, lambda *_: None, inputs=inputs, code=_code("a", "1"))
    assert len(ran) == 1, "by default a step made by unknown code reruns"
    assert json.loads((out / ".step.json").read_text())["code"] == _code("a", "1")


def test_bench_scripts_record_the_code():
    """Every script that writes a JSON under bench/results records ``code`` (or ends with bench/results.finish)."""
    missing = []
    for script in sorted((ROOT / "bench").glob("*.py")):
        text = script.read_text()
        if ("write_text(json.dumps" in text or "write_json(args" in text) and "code_provenance()" not in text:
            missing.append(script.name)
    assert not missing, f"these benchmarks write JSON without the code that made it: {missing}"
