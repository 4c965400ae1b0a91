"""The bookkeeping of two benchmarks whose runs take an hour: the attribution table keeps the rows of the settings
it does not rerun, each with the code that made it, and the combination verdict compares the four tasks with
every subset of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _row(setting: str, seed, micro: float, **extra) -> dict:
    metrics = dict.fromkeys(("macro_auc", "rbdc", "tbdc", "rbdc_one_to_one", "tbdc_one_to_one",
                             "kd_alone_micro_auc"), 0.5)
    return {"setting": setting, "seed": seed, "micro_auc": micro, **metrics, **extra}


def test_attribution_keeps_the_rows_it_does_not_rerun(tmp_path):
    import ped2_attribution as attribution

    earlier = tmp_path / "attribution.json"
    earlier.write_text(json.dumps({"date": "2026-12-01", "runs": [
        _row("yolo0.5", 0, 0.95, per_task_micro_auc={"aot": 0.7}), _row("yolo0.25+motion", 0, 0.96)]}))
    kept = attribution._kept_rows(earlier, ["yolo0.25+motion"])
    assert [r["setting"] for r in kept] == ["yolo0.5"]
    assert kept[0]["date"] == "2026-12-01" and kept[0]["aot_micro_auc"] == 0.7  # read from its per-task AUCs
    assert attribution._kept_rows(tmp_path / "absent.json", []) == []
    fresh = [_row("yolo0.25+motion", seed, 0.9 + seed / 100, aot_micro_auc=None, date="2026-12-06",
                  code={"commit": "0123456789abcdef", "dirty": False}) for seed in (0, 1)]
    lines = attribution.table(kept + fresh).splitlines()
    old, new = (next(line for line in lines if line.startswith(f"| {name} |")) for name in ("yolo0.5", "yolo0.25+motion"))
    assert old.endswith("| 2026-12-01, code not recorded |") and "| 95.0 |" in old and "| 70.0 |" in old
    assert new.endswith("| 2026-12-06, 0123456 |") and "| 90.5 ± 0.7 |" in new and "| — |" in new


def test_combination_verdict_compares_every_subset():
    import combination

    rule = {"aot": {"micro_auc": 0.6}, "kd": {"micro_auc": 0.9}, "aot+kd": {"micro_auc": 0.85}}
    verdict = combination.verdict(rule, ["aot", "kd"])
    assert verdict == {"joint": 0.85, "best_subset": "kd", "best_subset_micro_auc": 0.9,
                       "joint_at_or_above_every_subset": False}
    rule["aot+kd"]["micro_auc"] = 0.9  # a tie counts as at or above
    assert combination.verdict(rule, ["aot", "kd"])["joint_at_or_above_every_subset"]
