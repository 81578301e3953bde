"""The README's pictures of the app, taken in headless Chromium from the real app on adapters.yaml.

    python scripts/screenshots.py            # writes docs/screenshot.png, docs/screenshot_phone.png, docs/screenshot_how.png

Not part of the test suite (tests never write into the repository).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PROMPT = "Express the date 2047-11-19 in long Swedish format."  # an unseen task: no Swedish date adapter
DONE = "() => document.querySelector('#status')?.innerText.includes('tokens/s')"


def answer(page, prompt: str, k: int) -> None:
    """Set k, type the prompt, press Enter, wait for the answer and the explanation."""
    box = page.locator("#k-slider input[type=number]")
    box.fill(str(k))
    box.press("Enter")
    page.fill("#prompt textarea", prompt)
    page.press("#prompt textarea", "Enter")
    page.wait_for_function(DONE)
    page.wait_for_function("() => document.querySelector('#how-summary')?.innerText.includes('Mixture')")
    page.wait_for_timeout(800)  # plotly's transition


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"))
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    from app_fixtures import CHROMIUM, CHROMIUM_ARGS, served
    from playwright.sync_api import sync_playwright

    import app
    from logo_core.engine import LoGoEngine
    from logo_core.registry import load_config, with_overrides

    cfg = load_config(args.config)
    engine = LoGoEngine.from_pool_config(with_overrides(cfg, engine={"probe_cache_mb": 32}))
    with served(app.create_demo(engine, cfg.unseen_examples)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        desk = browser.new_page(viewport={"width": 1280, "height": 900})
        desk.set_default_timeout(300_000)
        desk.goto(url)
        answer(desk, PROMPT, 3)
        desk.screenshot(path=str(args.out / "screenshot.png"))  # the first screen: prompt, answer, chart
        how = browser.new_page(viewport={"width": 1280, "height": 720})
        how.set_default_timeout(300_000)
        how.goto(url)
        answer(how, PROMPT, 3)
        how.get_by_role("tab", name="How LoGo chose").click()
        how.locator("#how-summary").evaluate("e => e.scrollIntoView({block: 'start'})")
        how.wait_for_timeout(500)
        how.screenshot(path=str(args.out / "screenshot_how.png"))
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        phone.set_default_timeout(300_000)
        phone.goto(url)
        answer(phone, PROMPT, 3)
        bottom = phone.locator("#signal-plot").bounding_box()
        clip = {"x": 0, "y": 0, "width": 390, "height": bottom["y"] + bottom["height"] + 10}
        phone.screenshot(path=str(args.out / "screenshot_phone.png"), full_page=True, clip=clip)
        browser.close()
    print(
        f"wrote {', '.join(str(args.out / n) for n in ('screenshot.png', 'screenshot_how.png', 'screenshot_phone.png'))}"
    )


if __name__ == "__main__":
    main()
