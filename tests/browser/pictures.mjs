// Chromium reads focusd's picture doors as a page would: MJPEG in an <img>, JPEG over
// /ws/jpeg drawn from blobs and reported back, raw planes over /ws/frames. Reads the test
// stamp off what it drew to measure latency. Prints one JSON line.
//
// Usage: node pictures.mjs BASE_URL SECONDS
// FOCUSD_TOKEN is sent as ?token= (an <img> and a WebSocket cannot send headers).
import { launch } from "./chromium.mjs";

const [base, seconds] = process.argv.slice(2);
const browser = await launch();
let result;
try {
  const page = await browser.newPage();
  // The daemon's own origin (a public path), so that pictures can be read back.
  await page.goto(base + "/healthz");
  result = await page.evaluate(async (a) => {
    const q = "token=" + encodeURIComponent(a.token);
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    // The stamp: 32 cells across the top band, MSB first; the wall clock in ms mod 2^32.
    const age = (bits) => ((Date.now() % 4294967296) - bits + 4294967296) % 4294967296;
    const stampOf = (luma, w, h, stride, step) => {
      const band = Math.max(1, Math.round(h / 18)), row = Math.floor(band / 2);
      let bits = 0;
      for (let i = 0; i < 32; i++) {
        const x = Math.floor(((2 * i + 1) * w) / 64);
        bits = bits * 2 + (luma[(row * stride + x) * step] >= 128 ? 1 : 0);
      }
      return bits;
    };
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const drawnStamp = (img, w, h) => {
      canvas.width = w; canvas.height = h;
      g.drawImage(img, 0, 0);
      return stampOf(g.getImageData(0, 0, w, h).data, w, h, w, 4);
    };
    const out = {};

    // MJPEG in an <img>: sample what it shows.
    {
      const img = document.createElement("img");
      img.src = `/stream.mjpeg?fps=10&${q}`;
      document.body.appendChild(img);
      const stamps = new Set(), ages = [];
      const end = performance.now() + a.seconds * 1000;
      while (performance.now() < end) {
        await sleep(50);
        if (!img.naturalWidth) continue;
        const s = drawnStamp(img, img.naturalWidth, img.naturalHeight);
        if (!stamps.has(s)) { stamps.add(s); ages.push(age(s)); }
      }
      out.mjpeg = { width: img.naturalWidth, height: img.naturalHeight, pictures: stamps.size, ages };
      img.remove();
    }

    // JPEG over a WebSocket, drawn and reported; `slow` draws take 100 ms more (a slow
    // client), to see the server step quality down.
    const wsJpeg = (slow) => new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws/jpeg?${q}`);
      ws.binaryType = "blob";
      let meta = null, drawnAt = [], chain = Promise.resolve();
      const r = { frames: 0, ages: [], qualities: [], widths: [], error: null };
      // One message after the other, as a page that draws each picture before the next.
      const handle = async (data) => {
        if (typeof data === "string") { meta = JSON.parse(data); return; }
        const bitmap = await createImageBitmap(data);
        if (slow) await sleep(100);
        const s = drawnStamp(bitmap, bitmap.width, bitmap.height);
        r.frames++; r.ages.push(age(s)); r.qualities.push(meta.quality); r.widths.push(bitmap.width);
        if (s !== meta.captured_ms % 4294967296) r.error = `stamp ${s} is not captured_ms ${meta.captured_ms}`;
        const now = performance.now();
        drawnAt.push(now); drawnAt = drawnAt.filter((t) => now - t <= 1000);
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "rendered", seq: meta.seq, fps: drawnAt.length }));
        }
      };
      ws.onmessage = (m) => { chain = chain.then(() => handle(m.data)); };
      ws.onerror = () => { r.error = "websocket error"; };
      setTimeout(() => { ws.close(); resolve(r); }, (slow ? 2 * a.seconds : a.seconds) * 1000 + 1000);
    });
    out.ws_jpeg = await wsJpeg(false);
    out.ws_jpeg_slow = await wsJpeg(true);

    // Raw planes, uncompressed: the stamp straight from the Y plane.
    out.ws_frames = await new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws/frames?codec=none&track=context&${q}`);
      ws.binaryType = "arraybuffer";
      let meta = null;
      const r = { frames: 0, ages: [], sizes: [], error: null, format: null };
      ws.onmessage = (m) => {
        if (typeof m.data === "string") { meta = JSON.parse(m.data); return; }
        const y = new Uint8Array(m.data);
        const p = meta.planes[0];
        const total = meta.planes.reduce((n, p) => n + p.width * p.height * p.channels, 0);
        if (y.length !== total || y.length !== meta.bytes) r.error = `${y.length} bytes, planes say ${total}`;
        r.frames++; r.format = meta.format; r.sizes.push([meta.width, meta.height]);
        r.ages.push(age(stampOf(y, p.width, p.height, p.width, 1)));
      };
      ws.onerror = () => { r.error = "websocket error"; };
      setTimeout(() => { ws.close(); resolve(r); }, a.seconds * 1000);
    });
    return out;
  }, { seconds: Number(seconds), token: process.env.FOCUSD_TOKEN || "" });
} catch (e) {
  result = { error: String(e && e.stack || e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
