"""The conda environment and pyproject.toml ask for the same packages; the entry points exist."""

import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for group in project["optional-dependencies"].values() for d in group]  # dev, bench
    wanted = {_normalise(d) for d in project["dependencies"] + extras}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_normalise(d) for d in pip_section if not d.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].lstrip(">=")
    assert tuple(int(x) for x in python.split("=")[1].split(".")) >= tuple(int(x) for x in minimum.split("."))


def test_module_entry_point_prints_help():
    out = subprocess.run([sys.executable, "-m", "ssmtl_core", "--help"], capture_output=True, text=True, check=True)
    for command in ("info", "download", "synth", "detect", "model", "train", "evaluate", "score-video"):
        assert command in out.stdout


def test_console_script_installed():
    script = Path(sys.executable).parent / "ssmtl"
    assert script.is_file(), "the ssmtl console script is missing: reinstall with pip install -e ."
    out = subprocess.run([str(script), "model", "--arch", "shallow_narrow"], capture_output=True, text=True, check=True)
    assert "total parameters" in out.stdout
