// Drives Debian's headless Chromium against a running focusd viewer page and prints one
// JSON line of what it saw. Usage: node viewer.mjs <viewer-url> <screenshot.png>
// The Rust test tests/browser.rs starts the daemon, runs this and checks the JSON.
import { launch } from "./chromium.mjs";

const [url, shot] = process.argv.slice(2);
const result = { steps: [] };
const step = (name, data = {}) => result.steps.push({ name, t: Date.now(), ...data });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => m.type() === "error" && step("console-error", { text: m.text() }));
  const started = Date.now();
  await page.goto(url);
  result.url_after_load = page.url();
  // Both inbound video streams decode frames.
  const decoded = async () => page.evaluate(async () => {
    const pc = window.focusd.pc;
    if (!pc) return null;
    const mids = pc.getTransceivers().map((t) => t.mid);
    const out = { state: pc.connectionState };
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out[s.mid === mids[1] ? "source" : "context"] = { framesDecoded: s.framesDecoded || 0, width: s.frameWidth, height: s.frameHeight, codec: s.codecId, bytes: s.bytesReceived };
      }
    });
    return out;
  });
  let stats = null;
  for (let i = 0; i < 200; i++) {
    stats = await decoded();
    // Chromium fills in frameWidth a stats report after the first decoded frame.
    const shown = (t) => t?.framesDecoded > 0 && t.width > 0;
    if (stats && shown(stats.context) && shown(stats.source)) break;
    await page.waitForTimeout(50);
  }
  result.first_frames_ms = Date.now() - started;
  result.initial = stats;
  result.codecs = await page.evaluate(async () => {
    const names = [];
    (await window.focusd.pc.getStats()).forEach((s) => s.type === "codec" && names.push(s.mimeType + " " + (s.sdpFmtpLine || "")));
    return names;
  });

  // Mode switch through the page: VISION.
  await page.click("button[data-mode=VISION]");
  await page.waitForFunction(() => window.focusd.state && window.focusd.state.mode === "VISION", null, { timeout: 5000 });
  result.server_mode_after_click = await page.evaluate(async () => (await (await window.focusd.api("/api/state")).json()).mode);
  await page.waitForTimeout(2500);
  result.after_vision = await decoded();
  // The ROI's boxes (the test source's moving shapes, by motion) are drawn, and the toggle
  // hides them.
  await page.waitForFunction(() => window.focusd.drawnBoxes > 0, null, { timeout: 5000 }).catch(() => {});
  const boxes = async () => page.evaluate(() => ({ roi: window.focusd.roi.length, drawn: window.focusd.drawnBoxes }));
  result.boxes_shown = await boxes();
  await page.click("#toggle-boxes");
  result.boxes_hidden = await boxes();
  await page.click("#toggle-boxes");

  // Screenshot of the composite, then check the picture itself (decoded in the page).
  const png = await page.locator("#composite").screenshot({ path: shot });
  result.screenshot = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sum2 = 0, bright = 0, n = 0;
    for (let i = 0; i < d.length; i += 16) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sum2 += y * y; n++;
      if (y > 170) bright++;
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, mean, stddev: Math.sqrt(sum2 / n - mean * mean), bright_share: bright / n };
  }, png.toString("base64"));

  // A rectangle drawn with the mouse becomes the HYBRID rectangle.
  const box = await page.locator("#overlay").boundingBox();
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.6, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => window.focusd.state && window.focusd.state.mode === "HYBRID" && window.focusd.state.hybrid_rect, null, { timeout: 5000 });
  result.hybrid_rect = await page.evaluate(async () => (await (await window.focusd.api("/api/state")).json()).hybrid_rect);

  // LOW: the page's own kbps figure for the source falls to ~0.
  await page.click("button[data-mode=LOW]");
  await page.waitForTimeout(3500);
  result.low_kbps = await page.evaluate(() => ({ ...window.focusd.kbps }));
  result.status_text = await page.locator("#status").innerText();
  result.final = await decoded();
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
