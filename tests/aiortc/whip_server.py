"""A WHIP endpoint (RFC 9725) made of aiortc, an independent WebRTC stack, for the WHIP
door's tests: it takes an offer with a Bearer token, answers 201 with a resource Location,
decodes what is published, and ends a resource on DELETE.

Usage: whip_server.py TOKEN
Prints {"port": N} once listening on 127.0.0.1. GET /stats returns what it saw: per
session the connection state and, per video m-line in offer order (context, source),
frames decoded and their size; `refused` counts offers with a wrong token, `deleted` the
resources ended. POST /kick/N ends session N from the endpoint's side.
"""

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiortc import RTCPeerConnection, RTCSessionDescription

TOKEN = sys.argv[1]
loop = asyncio.new_event_loop()
sessions = {}
counts = {"refused": 0, "deleted": 0}


async def consume(track, seen):
    while True:
        try:
            frame = await track.recv()
        except Exception:
            return
        seen.update(frames=seen["frames"] + 1, width=frame.width, height=frame.height)


async def answer(offer):
    pc = RTCPeerConnection()
    tracks = []

    @pc.on("track")
    def on_track(track):
        seen = {"frames": 0}
        tracks.append((track, seen))
        asyncio.ensure_future(consume(track, seen))

    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc, tracks


def run(coro):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=15)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/kick/"):
            # The endpoint ends a session from its side (an SFU restarting, a kick).
            n = self.path.rsplit("/", 1)[-1]
            if n not in sessions:
                return self.reply(404)
            run(sessions[n][0].close())
            return self.reply(200)
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            counts["refused"] += 1
            return self.reply(401, b"bad token\n")
        if self.headers.get("Content-Type") != "application/sdp":
            return self.reply(415, b"application/sdp expected\n")
        pc, tracks = run(answer(body.decode()))
        n = str(len(sessions) + 1)
        sessions[n] = (pc, tracks)
        self.reply(
            201,
            pc.localDescription.sdp.encode(),
            [("Content-Type", "application/sdp"), ("Location", f"/whip/resource/{n}")],
        )

    def do_DELETE(self):
        n = self.path.rsplit("/", 1)[-1]
        if self.headers.get("Authorization") != "Bearer " + TOKEN or n not in sessions:
            return self.reply(404)
        run(sessions[n][0].close())
        counts["deleted"] += 1
        self.reply(200)

    def do_GET(self):
        def order(pc, tracks):
            # Tracks by their m-line's place in the offer.
            mids = [t.mid for t in pc.getTransceivers()]
            by_mid = {}
            for track, seen in tracks:
                for t in pc.getTransceivers():
                    if t.receiver.track is track:
                        by_mid[t.mid] = seen
            return [by_mid.get(m, {"frames": 0}) for m in mids]

        stats = {
            "sessions": [
                {"state": pc.connectionState, "video": order(pc, tracks)}
                for pc, tracks in sessions.values()
            ],
            **counts,
        }
        self.reply(200, json.dumps(stats).encode(), [("Content-Type", "application/json")])

    def log_message(self, *args):
        pass


threading.Thread(target=loop.run_forever, daemon=True).start()
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
