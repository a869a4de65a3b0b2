"""Byte planes of a safetensors file's tensor data, for carrying the fp16 encoder to the GPU machine.

A device call carries at most 64 MiB: the MiniLM encoder in fp16 (44 MiB), xz-compressed, is 40.8 MB;
with the high and the low bytes of each 2-byte value stored apart (two planes) xz gets it to 38.7 MB,
which leaves room for the stack and the GMB data. The header is kept as it is.

usage: python byte_planes.py split|join IN OUT    (split here before xz; join there after xz -d)
"""
import json
import struct
import sys

import numpy


def _parts(raw: bytes):
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    if dtypes != {"F16"} and dtypes != {"BF16"}:
        sys.exit(f"byte_planes: only 2-byte float tensors are split, this file has {sorted(dtypes)}")
    return raw[: 8 + n], numpy.frombuffer(raw[8 + n :], dtype=numpy.uint8)


def split(raw: bytes) -> bytes:
    head, data = _parts(raw)
    return head + data.reshape(-1, 2).T.tobytes()


def join(raw: bytes) -> bytes:
    head, data = _parts(raw)
    return head + data.reshape(2, -1).T.tobytes()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("split", "join"):
        sys.exit(__doc__)
    with open(sys.argv[2], "rb") as f:
        raw = f.read()
    with open(sys.argv[3], "wb") as f:
        f.write((split if sys.argv[1] == "split" else join)(raw))
