#!/usr/bin/env python3
"""`make bench-engine`: Contrail's CPU engine vs llama.cpp on both GGUF fixtures, in one run, 2 threads.

llama.cpp is built by scripts/llamacpp_build.py (cached outside the repo). Prints tokens/s for prefill (pp512), single-stream decode (tg128) and
aggregate decode with 4 and 16 sequences, and the ratios Contrail/llama.cpp, for each --activations mode. A benchmark, not a test."""
import json
import os
import re
import subprocess
import sys

import llamacpp_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = llamacpp_build.HOME
THREADS = int(os.environ.get("THREADS", "2"))
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
CONTRAIL = os.path.join(ROOT, ".build", "release", "contrail")


def llama_cpp(bench, batched, model):
    out = subprocess.run([bench, "-m", model, "-t", str(THREADS), "-p", "512", "-n", "128", "-r", "3", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    result = {}
    for r in rows:
        if r.get("n_prompt") == 512 and r.get("n_gen") == 0:
            result["pp512"] = r["avg_ts"]
        if r.get("n_gen") == 128 and r.get("n_prompt") == 0:
            result["tg128"] = r["avg_ts"]
    out = subprocess.run([batched, "-m", model, "-t", str(THREADS), "-c", "4096", "-npp", "16", "-ntg", "32", "-npl", "4,16"],
                         capture_output=True, text=True, check=True).stdout
    # Table rows: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] == "16" and cells[1] == "32" and cells[2] in ("4", "16"):
            result["batch" + cells[2]] = float(cells[7])
    return result


def contrail(model, *extra):
    out = subprocess.run([CONTRAIL, "engine-bench", "--model", model, "--threads", str(THREADS), "--batch", "4", "16", *extra],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


PJRT_PLUGIN = os.path.join(HOME, "fixtures", "pjrt_c_api_cpu_plugin.so")


def main():
    if not os.path.exists(CONTRAIL):
        sys.exit("bench-engine: build the release binary first (make release)")
    bench, batched = llamacpp_build.tools("llama-bench", "llama-batched-bench")
    # Contrail in each --activations mode: f32 (the default, exact to the f32 reference), int8 (llama.cpp's
    # own scheme for these weight types) and int8x2 (int8 plus the residual: within 0.01 of f32).
    print(f"bench-engine: {THREADS} threads; tokens/s, ratio Contrail/llama.cpp per --activations mode")
    print(f"{'model':<34} {'metric':<8} {'llama.cpp':>10} {'f32':>8} {'ratio':>6} {'int8':>8} {'ratio':>6} {'int8x2':>8} {'ratio':>6}")
    cpu, ceilings = {}, []
    for name in MODELS:
        path = os.path.join(HOME, "fixtures", name)
        ours, int8, int8x2 = (contrail(path, "--activations", mode, *(["--memory"] if mode == "int8" else [])) for mode in ("f32", "int8", "int8x2"))
        theirs = llama_cpp(bench, batched, path)
        cpu[name] = ours
        ceilings.append((name, int8, theirs))
        for metric in ("pp512", "tg128", "batch4", "batch16"):
            b = theirs.get(metric)
            cells = []
            for run in (ours, int8, int8x2):
                a = run.get(metric)
                cells.append(f"{a or 0:>8.1f} " + (f"{a / b:6.2f}" if a and b else "   n/a"))
            print(f"{name:<34} {metric:<8} {b or 0:>10.1f} {' '.join(cells)}", flush=True)
    # Single-stream decode reads every weight once per token, so memory bandwidth caps it: the stored
    # tensors' bytes for any engine reading the file's formats (llama.cpp), the packed copies' for int8.
    print(f"\nbench-engine: single-stream decode against the memory read rate (measured now, {THREADS} threads)")
    print(f"{'model':<34} {'read GB/s':>9} {'stored MB':>9} {'ceiling':>8} {'int8 MB':>8} {'ceiling':>8} {'int8 tg':>8} {'llama tg':>8} {'2x needs':>9}")
    for name, int8, theirs in ceilings:
        rate, stored, read = int8.get("read_gbps"), int8.get("stored_weight_bytes_per_token"), int8.get("weight_bytes_per_token")
        if not (rate and stored and read):
            continue
        tg, anchor = int8.get("tg128") or 0, theirs.get("tg128") or 0
        # GB/s an engine reading the stored bytes would need to decode at twice llama.cpp's rate.
        needs = 2 * anchor * stored / 1e9
        print(f"{name:<34} {rate:>9.1f} {stored / 1e6:>9.1f} {rate * 1e9 / stored:>8.1f} {read / 1e6:>8.1f} {rate * 1e9 / read:>8.1f} "
              f"{tg:>8.1f} {anchor:>8.1f} {needs:>7.1f}GB/s", flush=True)
    if not os.path.exists(PJRT_PLUGIN):
        print("bench-engine: no XLA CPU PJRT plugin (make fixtures fetches it); PJRT backend skipped")
        return
    # The PJRT backend on the XLA CPU plugin (f32 weights; one program computes all 16 slots every step,
    # so tg128 and batch4 run the batch-16 program). Host overhead: time outside Execute per decode step.
    print(f"\nbench-engine: PJRT backend on the XLA CPU plugin; tokens/s (ratio PJRT/CPU backend)")
    print(f"{'model':<34} {'metric':<22} {'pjrt':>10} {'cpu':>10} {'ratio':>7}")
    for name in MODELS:
        path = os.path.join(HOME, "fixtures", name)
        ours = contrail(path, "--backend", "pjrt", "--pjrt-plugin", PJRT_PLUGIN)
        for metric in ("pp512", "tg128", "batch4", "batch16"):
            a, b = ours.get(metric), cpu[name].get(metric)
            ratio = f"{a / b:7.2f}" if a and b else "    n/a"
            print(f"{name:<34} {metric:<22} {a or 0:>10.1f} {b or 0:>10.1f} {ratio}", flush=True)
        for b in (4, 16):
            overhead = ours.get(f"host_overhead_batch{b}")
            if overhead is not None:
                print(f"{name:<34} {f'host overhead batch{b}':<22} {100 * overhead:>9.1f}%", flush=True)


if __name__ == "__main__":
    main()
