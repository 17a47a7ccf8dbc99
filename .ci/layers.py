#!/usr/bin/env python3
"""Fails if a workspace crate depends on a crate of the same or a higher layer.

Data flows one way: shm -> sync -> queue/alloc -> process -> redis -> shop; the facade sits on top.
"""
import json
import subprocess
import sys

LAYERS = {
    "baozi-shm": 0,
    "baozi-sync": 1,
    "baozi-queue": 2,
    "baozi-alloc": 2,
    "baozi-process": 3,
    # Above baozi-process: its RedisWorkers is a backend of baozi-process's Pool.
    "baozi-redis": 4,
    "baozi-shop": 5,
    "baozi": 6,
    # The facade's benchmarks, a package of their own so that the facade's test hooks stay out
    # of them; unpublished.
    "baozi-benches": 7,
}

meta = json.loads(
    subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"])
)
bad = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in LAYERS:
        bad.append(f"{name}: not assigned a layer in .ci/layers.py")
        continue
    for dep in pkg["dependencies"]:
        if dep["kind"] == "dev":
            continue  # tests and benches may use anything
        d = dep["name"]
        if d in LAYERS and LAYERS[d] >= LAYERS[name]:
            bad.append(f"{name} (layer {LAYERS[name]}) depends on {d} (layer {LAYERS[d]})")
if bad:
    print("layer check failed:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"layer check: {len(meta['packages'])} crates, dependencies point down only")
