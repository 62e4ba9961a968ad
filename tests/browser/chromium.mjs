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
