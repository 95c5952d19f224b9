"""Shared helpers of the training benchmarks: environment facts and result files."""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def environment(corpus_hash: str) -> dict[str, Any]:
    """What a reader needs to compare a result: command, versions, threads, CPU, corpus."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "corpus_hash": corpus_hash,
    }


def matmul_peak_gflops(*, sizes: tuple[int, ...] = (256, 512, 1024), seconds: float = 1.0) -> dict:
    """Measured fp32 matrix-multiply throughput (GFLOP/s): the best over a few square sizes."""
    results = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b  # warm up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        results[n] = 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
    return {"best_gflops": max(results.values()), "by_size": results}


def write_results(name: str, result: dict[str, Any], markdown: str, out_dir: str | Path) -> Path:
    """Write ``name.json`` and ``name.md`` into ``out_dir``; return the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    env = result["environment"]
    header = (f"Command: `{env['command']}`  \n"
              f"Date (UTC): {env['date_utc']}; torch {env['torch']}, Python {env['python']}, "
              f"{env['threads']} threads, CPU: {env['cpu']}; corpus hash {env['corpus_hash']}\n\n")
    (out / f"{name}.md").write_text(header + markdown + "\n", encoding="utf-8")
    return out / f"{name}.json"
