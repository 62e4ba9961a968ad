#!/usr/bin/env python3
"""Raw frames from focusd's /ws/frames, as numpy arrays.

Usage: frames.py URL [COUNT] [--dump DIR]
  URL    ws://HOST:8888/ws/frames?codec=zstd&track=source&token=TOKEN
         (codec: zstd, lz4 or none; track: source or context)
  COUNT  frames to read (default 10)
  --dump DIR  also write each frame's planes to DIR/SEQ.PLANE (raw bytes)

Prints one JSON line per frame: its metadata, the shape of each plane, and latency_ms
(from capture to decompressed here, by this machine's clock).
Needs: pip install websockets numpy zstandard lz4
"""
import json
import sys
import time
from pathlib import Path

import lz4.block
import numpy as np
import zstandard
from websockets.sync.client import connect


def decompress(meta, payload):
    """The frame's planes, tightly packed, as focusd sent them."""
    if meta["codec"] == "zstd":
        return zstandard.ZstdDecompressor().decompress(payload)
    if meta["codec"] == "lz4":
        return lz4.block.decompress(payload)  # the size comes first, as it expects
    return payload


def planes(meta, payload):
    """{'y': HxW array, 'u': ..., 'v': ...} for I420; {'y': ..., 'uv': HxWx2} for NV12."""
    raw = decompress(meta, payload)
    out, at = {}, 0
    for p in meta["planes"]:
        n = p["width"] * p["height"] * p["channels"]
        a = np.frombuffer(raw, np.uint8, n, at)
        shape = (p["height"], p["width"]) + ((p["channels"],) if p["channels"] > 1 else ())
        out[p["name"]] = a.reshape(shape)
        at += n
    return out


def frames(url):
    """Yields (metadata, planes) for each frame: a frame_meta text, then its bytes."""
    with connect(url, max_size=None) as ws:
        while True:
            meta = json.loads(ws.recv())
            assert meta["type"] == "frame_meta", meta
            yield meta, planes(meta, ws.recv())


def main():
    args = sys.argv[1:]
    dump = None
    if "--dump" in args:
        i = args.index("--dump")
        dump = Path(args[i + 1])
        del args[i : i + 2]
    url, count = args[0], int(args[1]) if len(args) > 1 else 10
    for n, (meta, p) in enumerate(frames(url)):
        meta["latency_ms"] = time.time() * 1000 - meta["captured_ms"]
        if dump:
            for name, a in p.items():
                (dump / f"{meta['seq']}.{name}").write_bytes(a.tobytes())
        meta["shapes"] = {name: list(a.shape) for name, a in p.items()}
        print(json.dumps(meta), flush=True)
        if n + 1 >= count:
            break


if __name__ == "__main__":
    main()
