// Loads the viewer page, prints "connected" once it shows video, then watches it through
// the daemon going away and coming back (the Rust test restarts it): prints each new
// message the page shows as it appears ({"message": ...}), then one JSON line of what the
// page said and when it had video again. Usage: node reconnect.mjs <viewer-url>
import { launch } from "./chromium.mjs";

const [url] = process.argv.slice(2);
const browser = await launch();
const result = { statuses: [], messages: [] };
try {
  const page = await browser.newPage();
  await page.goto(url);
  // Video on the source track of the page's current connection.
  const playing = () => page.evaluate(async () => {
    const pc = window.focusd.pc;
    if (!pc || pc.connectionState !== "connected") return 0;
    let frames = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames = Math.max(frames, s.framesDecoded || 0);
    });
    return frames;
  });
  const until = async (what, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await what()) return true;
      await page.waitForTimeout(50);
    }
    return false;
  };
  if (!(await until(async () => (await playing()) > 0, 20000))) throw new Error("no video at first");
  result.ice_servers = await page.evaluate(() => window.focusd.pc.getConfiguration().iceServers);
  const first = await page.evaluate(() => { window.firstPc = window.focusd.pc; return true; });
  console.log("connected");
  const lost = Date.now();
  let last = "";
  const back = await until(async () => {
    const seen = await page.evaluate(() => ({
      status: document.getElementById("pc-state").textContent,
      message: document.getElementById("message").textContent,
      fresh: window.focusd.pc !== window.firstPc,
    }));
    if (seen.status !== last) { result.statuses.push(seen.status); last = seen.status; }
    if (seen.message && !result.messages.includes(seen.message)) {
      result.messages.push(seen.message);
      console.log(JSON.stringify({ message: seen.message }));
    }
    return seen.fresh && (await playing()) > 0;
  }, 40000);
  result.video_again = back && first;
  result.video_again_after_ms = Date.now() - lost;
  result.mode = await page.evaluate(() => window.focusd.state && window.focusd.state.mode);
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
