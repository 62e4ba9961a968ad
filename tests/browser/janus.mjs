// Chromium viewers on a Janus Streaming mountpoint: each page is a viewer (Janus offers,
// the page answers), decodes every video stream and reads the data stream. Signalling
// goes through Janus's HTTP API from here; the pages only do WebRTC. Prints one JSON line:
// per viewer, per video stream (by its mid) the frames decoded and the frame size, and
// the last text that arrived on the data channel. A `{"watching": N}` line comes first,
// when every viewer decodes every stream and the SECONDS of watching begin.
//
// Usage: node janus.mjs JANUS_URL MOUNTPOINT_ID VIEWERS SECONDS
//   JANUS_URL      Janus's HTTP API (http://127.0.0.1:PORT/janus)
//   SECONDS        how long the viewers watch once all are connected
import { launch, newPage } from "./chromium.mjs";

const [janus, mountpoint, viewers, seconds] = process.argv.slice(2);
let transactions = 0;

// One Janus API request; returns its parsed reply.
async function call(path, body) {
  const r = await fetch(janus + path, {
    method: "POST",
    body: JSON.stringify({ ...body, transaction: `t${++transactions}` }),
  });
  const reply = await r.json();
  if (reply.janus === "error") throw new Error(`${body.janus}: ${JSON.stringify(reply.error)}`);
  return reply;
}

// Long-polls the session until an event carries a JSEP (the mountpoint's offer).
async function offerOf(session) {
  const until = Date.now() + 10000;
  while (Date.now() < until) {
    const events = await (await fetch(`${janus}/${session}?maxev=5`)).json();
    for (const e of [].concat(events)) {
      if (e.plugindata?.data?.error) throw new Error(JSON.stringify(e.plugindata.data));
      if (e.jsep) return e.jsep;
    }
  }
  throw new Error("no offer from the mountpoint within 10 s");
}

const browser = await launch();
let result;
const keepalives = [];
try {
  const sessions = [];
  for (let i = 0; i < Number(viewers); i++) {
    const session = (await call("", { janus: "create" })).data.id;
    keepalives.push(setInterval(() => call(`/${session}`, { janus: "keepalive" }).catch(() => {}), 15000));
    const handle = (await call(`/${session}`, { janus: "attach", plugin: "janus.plugin.streaming" })).data.id;
    await call(`/${session}/${handle}`, {
      janus: "message", body: { request: "watch", id: Number(mountpoint) },
    });
    const offer = await offerOf(session);
    const page = await newPage(browser);
    const answer = await page.evaluate(async (offer) => {
      const pc = new RTCPeerConnection();
      window.seen = { text: null, messages: 0 };
      const listen = (channel) => {
        channel.binaryType = "arraybuffer";
        channel.onmessage = (m) => {
          window.seen.text = typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data);
          window.seen.messages++;
        };
      };
      pc.ondatachannel = (e) => listen(e.channel);
      await pc.setRemoteDescription(offer);
      // Janus relays data on a channel its viewer opens (as janus.js does).
      listen(pc.createDataChannel("JanusDataChannel"));
      await pc.setLocalDescription(await pc.createAnswer());
      // Non-trickle: the answer carries the candidates.
      await new Promise((done) => {
        if (pc.iceGatheringState === "complete") return done();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
        setTimeout(done, 3000);
      });
      window.showVideo(pc);
      window.pc = pc;
      return { type: "answer", sdp: pc.localDescription.sdp };
    }, offer);
    await call(`/${session}/${handle}`, { janus: "message", body: { request: "start" }, jsep: answer });
    sessions.push({ session, page });
  }
  const stats = async (page) => page.evaluate(async () => {
    const byMid = {};
    const report = await window.pc.getStats();
    const mids = {};
    for (const t of window.pc.getTransceivers()) mids[t.receiver.track.id] = t.mid;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        byMid[s.mid ?? mids[s.trackIdentifier]] = {
          framesDecoded: s.framesDecoded || 0,
          width: s.frameWidth || 0,
          height: s.frameHeight || 0,
          pliCount: s.pliCount || 0,
        };
      }
    });
    return { video: byMid, state: window.seen.text, messages: window.seen.messages };
  });
  // Waits until every viewer decodes every stream (at most 15 s), then watches.
  const until = Date.now() + 15000;
  for (;;) {
    const all = await Promise.all(sessions.map((s) => stats(s.page)));
    const ready = all.every((v) => Object.keys(v.video).length >= 2
      && Object.values(v.video).every((t) => t.framesDecoded > 0));
    if (ready || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const before = await Promise.all(sessions.map((s) => stats(s.page)));
  // For a caller that measures the sender meanwhile.
  console.log(JSON.stringify({ watching: sessions.length }));
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  const after = await Promise.all(sessions.map((s) => stats(s.page)));
  result = { viewers: after.map((a, i) => ({ ...a, before: before[i].video })) };
} catch (e) {
  result = { error: String(e.stack || e) };
} finally {
  keepalives.forEach(clearInterval);
  await browser.close();
}
console.log(JSON.stringify(result));
