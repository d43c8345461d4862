#!/usr/bin/env python3
"""Summarise an Nsight Compute CSV written by gpu-check's qwen-ncu stage.

    python3 scripts/ncu_summary.py ncu-b1.csv [--skip N]

One line per (kernel, grid): launches, mean duration (us), DRAM bytes read per launch, the
read rate (GB/s), L2 bytes per launch, achieved occupancy; then the total. `--skip N`
ignores the first N kernels (the prefill step before the decode graphs).
"""
import argparse
import csv
import io
import sys
from collections import OrderedDict


def rows(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # ncu prints its own lines (==PROF== ...) before the CSV header.
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"{path}: no CSV header (\"ID\",...) found")
    return list(csv.DictReader(io.StringIO(text[start:])))


def number(v):
    return float(v.replace(",", "")) if v not in ("", "n/a") else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--skip", type=int, default=0)
    a = ap.parse_args()
    kernels = OrderedDict()  # ID -> {name, grid, metrics}
    for r in rows(a.csv):
        k = kernels.setdefault(r["ID"], {"name": r["Kernel Name"], "grid": r.get("Grid Size", ""), "m": {}})
        unit = r.get("Metric Unit", "")
        v = number(r["Metric Value"])
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6,
                 "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(unit, 1.0)
        k["m"][r["Metric Name"]] = v * scale
    ids = list(kernels)[a.skip:]
    groups = OrderedDict()
    for i in ids:
        k = kernels[i]
        g = groups.setdefault((k["name"], k["grid"]), [])
        g.append(k["m"])
    tot_us = 0.0
    print(f"{'kernel':<44} {'grid':<14} {'n':>4} {'us':>9} {'dram_MB':>9} {'GB/s':>7} {'L2_MB':>8} {'occ%':>6}")
    for (name, grid), ms in groups.items():
        n = len(ms)
        us = sum(m.get("gpu__time_duration.sum", 0.0) for m in ms) / n
        dram = sum(m.get("dram__bytes_read.sum", 0.0) for m in ms) / n
        l2 = sum(m.get("lts__t_bytes.sum", 0.0) for m in ms) / n
        occ = sum(m.get("sm__warps_active.avg.pct_of_peak_sustained_active", 0.0) for m in ms) / n
        tot_us += us * n
        gbs = dram / (us * 1e3) if us > 0 else 0.0
        print(f"{name[:44]:<44} {grid[:14]:<14} {n:>4} {us:>9.2f} {dram / 1e6:>9.2f} {gbs:>7.0f} {l2 / 1e6:>8.2f} {occ:>6.1f}")
    print(f"{len(ids)} kernels, {tot_us:.1f} us of kernel time")


if __name__ == "__main__":
    main()
