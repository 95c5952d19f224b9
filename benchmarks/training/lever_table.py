"""The table of results/levers/README.md, from the JSON files of the exploration runs.

Each file is what one run of ``bits_per_char.py --out ...`` wrote (its command,
environment and configuration inside); this prints one row per training budget.
Run from the repository root::

    python benchmarks/training/lever_table.py benchmarks/training/results/levers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(folder: Path) -> list[str]:
    out = ["| file | date (UTC) | layers | context | batch | peak lr | dropout | precision | budget "
           "| steps | tokens/s | val bits/char |",
           "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        c, date = result["config"], result["environment"]["date_utc"]
        for run in result["runs"]:
            dtype = run.get("dtype", c.get("dtype", "float32"))
            out.append(f"| {path.name} | {date} | {c['n_layer']} | {c['block_size']} "
                       f"| {c['batch_size']} | {c['lr']:g} "
                       f"| {c.get('dropout', 0.0):g} | {dtype} | {60 * run['minutes']:.0f} s "
                       f"| {run['steps']:,} | {run['tokens_per_s']:,.0f} "
                       f"| {run['val_bits_per_char']:.3f} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows(Path(sys.argv[1] if len(sys.argv) > 1 else
                              Path(__file__).parent / "results" / "levers"))))
