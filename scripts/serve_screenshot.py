"""The README's picture of the chat page: `minigpt serve` on a real checkpoint, driven by headless Chromium.

Starts the CLI (as scripts/bench_serve.py does), opens the page in Debian's Chromium through Playwright (no
browser download), asks two questions with a fixed seed, clicks a reply token, picks a layer and head, and
saves a screenshot of the whole window.

    python scripts/serve_screenshot.py --checkpoint checkpoints/speedrun/sft --out docs/serve_page.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import start_server  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default="docs/serve_page.png")
    ap.add_argument("--questions", nargs="+", default=["What is `os.path.join` for?",
                                                       "Describe the function `json.dumps` briefly."])
    ap.add_argument("--seed", default="3")
    ap.add_argument("--token", type=int, default=3, help="which token of the last reply to click")
    ap.add_argument("--layer", default="2")
    ap.add_argument("--head", default="mean")
    args = ap.parse_args()
    proc, url = start_server(args.checkpoint)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720}, device_scale_factor=1)
            page.goto(url + "/")
            page.fill("#seed", args.seed)
            for i, question in enumerate(args.questions):
                page.fill("#input", question)
                page.press("#input", "Enter")
                page.wait_for_function(f"document.querySelectorAll('.msg.assistant .note').length === {i + 1}")
            page.locator(".msg.assistant").last.locator(".tok").nth(args.token).click()
            page.wait_for_selector("#influence[data-signature]")
            page.select_option("#layer", args.layer)
            page.select_option("#head", args.head)
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
