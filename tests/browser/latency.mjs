// Measures what a Chromium viewer sees of a WebRTC sender that draws the test stamp (the
// capture time in ms, 32 cells in the picture's top band): glass-to-glass latency per
// frame, the time from the first POST to the first frame shown, and how long offers take
// to be answered while that viewer watches. Prints one JSON line.
//
// Usage: node latency.mjs BASE_URL OFFER_PATH VIDEO_LINES TRACK SECONDS ANSWERS
//   BASE_URL     the sender's origin (its page is loaded so that requests are same-origin)
//   OFFER_PATH   where an SDP offer is POSTed (application/sdp; a 201 Location is DELETEd)
//   VIDEO_LINES  recvonly video transceivers in the offer (focusd: 2)
//   TRACK        which of them to measure (0-based)
// FOCUSD_TOKEN, when set, is sent as a Bearer token.
import { launch } from "./chromium.mjs";

const [base, offerPath, videoLines, track, seconds, answers] = process.argv.slice(2);
const browser = await launch();
let result;
try {
  const page = await browser.newPage();
  await page.goto(base);
  result = await page.evaluate(async (a) => {
    const headers = { "Content-Type": "application/sdp" };
    if (a.token) headers.Authorization = "Bearer " + a.token;
    // One negotiation: returns the connection, the answer time and the resource to DELETE.
    const negotiate = async () => {
      const pc = new RTCPeerConnection();
      for (let i = 0; i < a.videoLines; i++) pc.addTransceiver("video", { direction: "recvonly" });
      pc.createDataChannel("commands");
      await pc.setLocalDescription(await pc.createOffer());
      const posted = performance.now();
      const r = await fetch(a.offerPath, { method: "POST", headers, body: pc.localDescription.sdp });
      const sdp = await r.text();
      const answerMs = performance.now() - posted;
      if (!r.ok) throw new Error(`POST ${a.offerPath}: ${r.status} ${sdp}`);
      await pc.setRemoteDescription({ type: "answer", sdp });
      return { pc, posted, answerMs, location: r.headers.get("Location") };
    };
    const release = async (n) => {
      n.pc.close();
      if (n.location) await fetch(n.location, { method: "DELETE", headers });
    };

    const main = await negotiate();
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    document.body.appendChild(video);
    const receiver = main.pc.getTransceivers()[a.track].receiver;
    video.srcObject = new MediaStream([receiver.track]);
    video.play().catch(() => {});

    // Reads the stamp off each frame as it is presented.
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    // Per frame, ms from its stamp to: its last packet's arrival, its hand-over to the
    // compositor, and its expected display (glass).
    const received = [], presented = [], glass = [];
    let firstFrameMs = null, unreadable = 0, frames = 0;
    const done = new Promise((resolve) => {
      const onFrame = (_now, meta) => {
        frames++;
        if (firstFrameMs === null) firstFrameMs = performance.now() - main.posted;
        const w = meta.width, h = meta.height, band = Math.max(1, Math.round(h / 18));
        if (canvas.width !== w) { canvas.width = w; canvas.height = band; }
        g.drawImage(video, 0, 0, w, band, 0, 0, w, band);
        const row = g.getImageData(0, Math.floor(band / 2), w, 1).data;
        let bits = 0;
        for (let i = 0; i < 32; i++) {
          const x = Math.floor(((2 * i + 1) * w) / 64);
          bits = (bits * 2) + (row[4 * x] >= 128 ? 1 : 0);
        }
        // The stamp is the wall clock in ms, mod 2^32.
        const since = (t) => ((performance.timeOrigin + t) % 4294967296 - bits + 4294967296) % 4294967296;
        const age = since(meta.expectedDisplayTime);
        if (age < 10000) {
          glass.push(age);
          presented.push(since(meta.presentationTime));
          if (meta.receiveTime !== undefined) received.push(since(meta.receiveTime));
        } else unreadable++;
        if (performance.now() - main.posted < a.seconds * 1000) video.requestVideoFrameCallback(onFrame);
        else resolve();
      };
      video.requestVideoFrameCallback(onFrame);
      setTimeout(resolve, a.seconds * 1000 + 15000);
    });
    // Offers answered while the first viewer watches: each one closed again.
    await new Promise((r) => setTimeout(r, 1000));
    const answerMs = [];
    for (let i = 0; i < a.answers; i++) {
      const n = await negotiate();
      answerMs.push(n.answerMs);
      await release(n);
      await new Promise((r) => setTimeout(r, 100));
    }
    await done;
    await release(main);
    return { glass_ms: glass, presented_ms: presented, received_ms: received, first_frame_ms: firstFrameMs, answer_ms: answerMs, frames, unreadable };
  }, {
    offerPath, videoLines: Number(videoLines), track: Number(track), seconds: Number(seconds),
    answers: Number(answers), token: process.env.FOCUSD_TOKEN || null,
  });
} catch (e) {
  result = { error: String(e && e.stack || e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
