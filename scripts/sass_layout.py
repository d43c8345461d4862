#!/usr/bin/env python3
"""Where the decode megakernel's code lies: each entry's SASS size and, between the
timeline's stamp sites (`mega_mark`, qwen.cu), how many bytes of code each phase spans.

    python3 scripts/sass_layout.py [--cubin FILE] [--cuobjdump PATH] [ENTRY ...]

FILE defaults to the newest `.gpu/kernels/qwen_mega-*.cubin` (`bash scripts/gpu-check.sh
build` writes it with this machine's NVRTC). cuobjdump comes from the CUDA toolkit or from
PyPI without one: `pip download --no-deps nvidia-cuda-cuobjdump` and unzip the wheel
(`nvidia/cu13/bin/cuobjdump`). ENTRY defaults to every `qwen_decode_layers*` entry.

A stamp site is a `%globaltimer` read followed by the store of its pair: the store's offset
/ 16 is the event number (mega_timeline.rs `PHASES`). Sizes are static code between sites
in layout order, not instructions executed: a site's span may hold branches never taken
(other head dims, probes), so compare entries phase by phase, not as run times.
"""
import argparse
import glob
import os
import re
import subprocess
import sys

INS = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
STORE = re.compile(r"STG\.E\.64 .*\[R\d+\.64(?:\+0x([0-9a-f]+))?\]")


def sass(cuobjdump, cubin, entry):
    out = subprocess.run([cuobjdump, "-sass", "-fun", entry, cubin], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sass_layout: {cuobjdump} failed on {entry}: {out.stderr.strip()}")
    ins = [(int(m.group(1), 16), m.group(2)) for line in out.stdout.splitlines() for m in [INS.match(line)] if m]
    if not ins:
        sys.exit(f"sass_layout: no instructions for {entry} in {cubin}")
    return ins


def stamp_sites(ins):
    sites = []
    for i, (addr, text) in enumerate(ins):
        if "SR_GLOBALTIMERLO" not in text:
            continue
        event = None
        for _, nxt in ins[i + 1 : i + 4]:
            m = STORE.search(nxt)
            if m:
                event = int(m.group(1) or "0", 16) // 16
                break
        sites.append((addr, event))
    return sites


def entries(cuobjdump, cubin):
    out = subprocess.run([cuobjdump, "-elf", cubin], capture_output=True, text=True)
    names = sorted(set(re.findall(r"\.text\.(qwen_decode_layers\w*)", out.stdout)))
    if not names:
        sys.exit(f"sass_layout: no qwen_decode_layers entry in {cubin}")
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cubin")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    ap.add_argument("entry", nargs="*")
    a = ap.parse_args()
    cubin = a.cubin
    if cubin is None:
        found = sorted(glob.glob(".gpu/kernels/qwen_mega-*.cubin"), key=os.path.getmtime)
        if not found:
            sys.exit("sass_layout: no .gpu/kernels/qwen_mega-*.cubin (run `bash scripts/gpu-check.sh build`) and no --cubin")
        cubin = found[-1]
    names = a.entry or entries(a.cuobjdump, cubin)
    print(f"# {cubin}")
    for name in names:
        ins = sass(a.cuobjdump, cubin, name)
        total = ins[-1][0] + 16
        print(f"{name}: {total} bytes of SASS ({len(ins)} instructions)")
        prev = 0
        for addr, event in stamp_sites(ins):
            label = "?" if event is None else str(event)
            print(f"  site 0x{addr:06x}  event {label:>2}  {addr - prev:>7} bytes since the previous site")
            prev = addr
        print(f"  end  0x{total:06x}            {total - prev:>7} bytes after the last site")


if __name__ == "__main__":
    main()
