// A Chromium viewer of focusd reached only through a user-space link (the test kit's
// netem): its offer goes without candidates and the answer's candidates are replaced by
// the link's address, so every packet crosses the link. Watches for SECONDS, then prints
// one JSON line: per track (context, source) frames decoded over the last 3 s, the frame
// size, and Chromium's freeze count and time.
//
// Usage: node impaired.mjs BASE_URL LINK_HOST LINK_PORT SECONDS
// FOCUSD_TOKEN is sent as a Bearer token.
import { launch, newPage } from "./chromium.mjs";

const [base, linkHost, linkPort, seconds] = process.argv.slice(2);
const browser = await launch();
let result;
try {
  const page = await newPage(browser, base);
  result = await page.evaluate(async (a) => {
    const pc = new RTCPeerConnection();
    for (let i = 0; i < 2; i++) pc.addTransceiver("video", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    const offer = pc.localDescription.sdp.split("\r\n")
      .filter((l) => !l.startsWith("a=candidate:")).join("\r\n");
    const r = await fetch("/whep", {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + a.token },
      body: offer,
    });
    const answer = await r.text();
    if (!r.ok) throw new Error(`POST /whep: ${r.status} ${answer}`);
    // One candidate: the link.
    let replaced = false;
    const sdp = answer.split("\r\n").flatMap((l) => {
      if (!l.startsWith("a=candidate:")) return [l];
      if (replaced) return [];
      replaced = true;
      return [`a=candidate:1 1 udp 2130706431 ${a.linkHost} ${a.linkPort} typ host`];
    }).join("\r\n");
    await pc.setRemoteDescription({ type: "answer", sdp });
    window.showVideo(pc);
    const stats = async () => {
      const out = {};
      const byTrack = {};
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") byTrack[s.mid] = s;
      });
      pc.getTransceivers().forEach((t, i) => {
        const s = byTrack[t.mid] || {};
        out[i === 0 ? "context" : "source"] = {
          framesDecoded: s.framesDecoded || 0,
          width: s.frameWidth || 0,
          freezeCount: s.freezeCount || 0,
          freezesMs: Math.round((s.totalFreezesDuration || 0) * 1000),
        };
      });
      return out;
    };
    const watch = Number(a.seconds) * 1000;
    await new Promise((done) => setTimeout(done, Math.max(0, watch - 3000)));
    const before = await stats();
    await new Promise((done) => setTimeout(done, 3000));
    const after = await stats();
    for (const k of Object.keys(after)) {
      after[k].lastFrames = after[k].framesDecoded - before[k].framesDecoded;
    }
    return { tracks: after, ice: pc.iceConnectionState };
  }, { token: process.env.FOCUSD_TOKEN, linkHost, linkPort, seconds });
} catch (e) {
  result = { error: String(e.stack || e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
