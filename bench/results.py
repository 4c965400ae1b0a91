"""What every benchmark does last: note how busy the machine was, write its JSON, print its table.

``bench/detect.py`` and ``bench/train.py`` end with :func:`finish`; every benchmark JSON (these two and the
others, which write theirs directly) records the code that made it (``code``: ``ssmtl_core.io.code_provenance``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ssmtl_core.io import code_provenance


def finish(result: dict, summary_table: Callable[[dict], str], out: str | Path, cpu: str) -> int:
    """Close a benchmark's ``result``: the load average at the end (and a note when other work kept more than half
    the cores busy), its table, the JSON at ``out``; then print the machine, the table and the notes.

    Args:
        result: the benchmark's record, with ``load_average_start``, ``machine``, ``date`` and a ``notes`` list
            (and ``code``, taken when the benchmark started; added here when missing).
        summary_table: renders the table from ``result``.
        out: the JSON file to write.
        cpu: the CPU's name, for the printed machine line.

    Returns:
        0, the benchmark's exit status.
    """
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result.setdefault("code", code_provenance())
    start, end = result["load_average_start"][0], result["load_average_end"][0]
    cores = os.cpu_count() or 1
    if max(start, end) > 0.5 * cores:
        result["notes"].append(f"the machine was busy with other work (load average {start} at the start, {end} "
                               f"at the end, {cores} cores): wall-clock rates are lower than on an idle machine; "
                               "compare the per-CPU-second rates")
    table = summary_table(result)
    result["table"] = table.splitlines()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"machine: {cpu}, {result['machine']['cores']} cores; {result['date']}; load average {start} at start, "
          f"{end} at the end")
    print(table)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"\nwritten to {out}")
    return 0
