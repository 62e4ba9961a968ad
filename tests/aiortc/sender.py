"""A WebRTC sender on aiortc, the benchmark's peer: it answers `POST /offer`
(application/sdp) with one H.264 video track of 1280x720 pictures at 30 fps, encoded by
aiortc (libx264 through PyAV), each carrying the test stamp (the capture time in ms, 32
cells in the top band, as focusd's test source draws it) and a moving square.

Usage: sender.py PORT   (serves until killed; prints "listening" once it accepts)
"""

import asyncio
import fractions
import sys
import time

import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

WIDTH, HEIGHT, FPS = 1280, 720, 30
BAND = round(HEIGHT / 18)
CELL = WIDTH // 32
WHITE, BLACK, GREY = 235, 16, 110


def luma(ms, t):
    """The luma plane: the stamp band for `ms`, a grey field and a square moving with `t`."""
    value = ms & 0xFFFFFFFF
    line = b"".join(
        bytes([WHITE if (value >> (31 - i)) & 1 else BLACK]) * CELL for i in range(32)
    )
    rows = [line] * BAND
    x = int((t * 200) % (WIDTH - 80))
    plain = bytes([GREY]) * WIDTH
    square = bytes([GREY]) * x + bytes([WHITE]) * 80 + bytes([GREY]) * (WIDTH - x - 80)
    for y in range(BAND, HEIGHT):
        rows.append(square if 300 <= y < 380 else plain)
    return b"".join(rows)


class StampedTrack(VideoStreamTrack):
    """Pictures paced at FPS, stamped when they are made (that is their capture)."""

    def __init__(self):
        super().__init__()
        self.started = None
        self.count = 0
        self.chroma = bytes([128]) * (WIDTH * HEIGHT // 4)

    async def recv(self):
        if self.started is None:
            self.started = time.monotonic()
        due = self.started + self.count / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(luma(int(time.time() * 1000), due - self.started))
        frame.planes[1].update(self.chroma)
        frame.planes[2].update(self.chroma)
        frame.pts = self.count * 90000 // FPS
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


PAGE = b"<!doctype html><title>aiortc sender</title>"
peers = set()


async def answer(offer_sdp):
    pc = RTCPeerConnection()
    peers.add(pc)

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            peers.discard(pc)
            await pc.close()

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    for t in pc.getTransceivers():
        if t.kind == "video":
            pc.addTrack(StampedTrack())
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
            t.setCodecPreferences(h264)
            break
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def handle(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request, *headers = head.decode("latin-1").split("\r\n")
        method, path, _ = request.split(" ", 2)
        length = 0
        for h in headers:
            if h.lower().startswith("content-length:"):
                length = int(h.split(":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        if method == "POST" and path == "/offer":
            sdp = (await answer(body.decode())).encode()
            status, ctype, out = "201 Created", "application/sdp", sdp
        elif method == "GET":
            status, ctype, out = "200 OK", "text/html", PAGE
        else:
            status, ctype, out = "404 Not Found", "text/plain", b"not found"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\n"
            "Connection: close\r\n\r\n".encode() + out
        )
        await writer.drain()
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
