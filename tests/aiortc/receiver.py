"""Views a running focusd with aiortc, an independent WebRTC stack, and prints one JSON
line of what it saw: per track the decoded size, the frame count and the latency read
from the test source's stamp.

Usage: receiver.py BASE_URL offer|whep [SECONDS]
The Rust test tests/aiortc.rs starts the daemon, runs this and checks the JSON.
"""

import asyncio
import json
import statistics
import sys
import time
import os
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription

TRACKS = ("context", "source")
FRAMES_WANTED = 15


def read_stamp(frame):
    """The capture time (ms mod 2^32) in the top band: 32 cells, white = bit set."""
    plane = frame.planes[0]
    data = bytes(plane)
    w, h = frame.width, frame.height
    row = round(h / 18) // 2
    bits = 0
    for i in range(32):
        x = (2 * i + 1) * w // 64
        bits = (bits << 1) | (data[row * plane.line_size + x] >= 128)
    return bits


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    # The daemon's access token, as a WHEP player sends it.
    if os.environ.get("FOCUSD_TOKEN"):
        req.add_header("Authorization", "Bearer " + os.environ["FOCUSD_TOKEN"])
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Location"), r.read().decode()


async def receive(track, seen, deadline):
    latencies = []
    while len(latencies) < FRAMES_WANTED and time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), deadline - time.monotonic())
        except (asyncio.TimeoutError, Exception):
            break
        now = int(time.time() * 1000) % 2**32
        latencies.append((now - read_stamp(frame)) % 2**32)
        seen.update(width=frame.width, height=frame.height, frames=len(latencies))
    if latencies:
        seen["latency_ms_p50"] = statistics.median(latencies)


async def main(base, door, seconds):
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    result = {"door": door}
    try:
        for _ in TRACKS:
            pc.addTransceiver("video", direction="recvonly")
        if door == "offer":
            pc.createDataChannel("commands")
        await pc.setLocalDescription(await pc.createOffer())
        path = "/offer" if door == "offer" else "/whep"
        status, location, answer = await loop.run_in_executor(
            None, http, "POST", base + path, pc.localDescription.sdp.encode()
        )
        result["status"] = status
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = time.monotonic() + seconds
        seen = {name: {"frames": 0} for name in TRACKS}
        receivers = [
            receive(t.receiver.track, seen[name], deadline)
            for name, t in zip(TRACKS, pc.getTransceivers())
        ]
        await asyncio.gather(*receivers)
        result.update(seen)
        result["ice"] = pc.iceConnectionState
        if location:
            status, _, _ = await loop.run_in_executor(None, http, "DELETE", base + location)
            result["delete_status"] = status
    except Exception as e:  # reported to the Rust test, which fails on it
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        await pc.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    base, door = sys.argv[1].rstrip("/"), sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    asyncio.run(main(base, door, seconds))
