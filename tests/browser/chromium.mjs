// Debian's Chromium, headless, as every browser script here launches it ($CHROMIUM
// overrides the path): no GPU, no background traffic, video plays without a gesture.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/lib/chromium/chromium",
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-quic", "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

// Defined in every page `newPage` opens, for the scripts' page-side code.
function pageHelpers() {
  // Plays each received video track of `pc` in a muted <video>, so Chromium decodes and
  // renders it as a viewer page would.
  window.showVideo = (pc) => {
    for (const t of pc.getTransceivers()) {
      if (t.receiver.track.kind !== "video") continue;
      const v = document.createElement("video");
      v.muted = true;
      v.autoplay = true;
      v.srcObject = new MediaStream([t.receiver.track]);
      document.body.appendChild(v);
      v.play().catch(() => {});
    }
  };
}

// A page with the helpers; `url` is loaded (init scripts run on navigation only, so a
// page that needs no origin of its own gets about:blank).
export async function newPage(browser, url = "about:blank") {
  const page = await browser.newPage();
  await page.addInitScript(pageHelpers);
  await page.goto(url);
  return page;
}
