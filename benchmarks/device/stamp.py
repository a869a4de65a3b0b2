"""Prefix each non-empty line of stdin with the seconds since this filter started (the device scripts'
training logs): `cmd 2>&1 | python3 benchmarks/device/stamp.py > log`."""
import sys
import time

t0 = time.time()
for line in sys.stdin:
    if line.strip():
        print(f"{time.time() - t0:8.1f} {line.rstrip()}", flush=True)
