"""``python -m demo.screenshots [OUT_DIR]``: screenshots of the team board for the README.

Starts pushgate + the demo in this process (ephemeral port, a throwaway SQLite file, the
configuration of ``pushgate.toml``), drives Debian's chromium through Playwright with the
launch flags of tests/browser.py, lets bob assign alice a card and mention her, and saves
alice's board and her open bell at desktop (1280x800) and phone (390x844) sizes.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from demo.server import ROOT, start
from pushgate.config import load_config

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


async def main(out: Path) -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium on PATH (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(str(ROOT / "pushgate.toml"), env={})
    with tempfile.TemporaryDirectory(prefix="demo-shots-") as tmp:
        server = await start(config, db_path=str(Path(tmp) / "demo.sqlite3"))
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=chromium,
                    args=CHROMIUM_ARGS,
                    env={"XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp, "HOME": tmp},
                )
                await shoot(browser, server.url, out)
                await browser.close()
        finally:
            await server.close()


async def open_board(browser, url: str, user: str, viewport: dict, scale: float = 1):
    context = await browser.new_context(viewport=viewport, device_scale_factor=scale)
    page = await context.new_page()
    await page.goto(f"{url}/demo/board/1?as={user}")
    await page.wait_for_selector("#conn[data-state=connected]")
    await page.wait_for_selector(".card")
    return context, page


async def shoot(browser, url: str, out: Path) -> None:
    contexts = []
    for user in ("carol", "dave"):  # teammates online, for the dots
        contexts.append((await open_board(browser, url, user, DESKTOP))[0])
    alice_ctx, alice = await open_board(browser, url, "alice", DESKTOP)
    bob_ctx, bob = await open_board(browser, url, "bob", DESKTOP)
    contexts += [alice_ctx, bob_ctx]

    # bob: a new card mentioning alice, assigns her another, drags one to Done
    await bob.click('[data-column="todo"] .add-card')
    await bob.fill('[data-column="todo"] .add-input', "Review the launch checklist with @alice")
    await bob.keyboard.press("Enter")
    await bob.locator(".card", has_text="Pricing page copy").click()
    await bob.select_option("#f-assignee", "alice")
    await bob.fill("#f-description", "Three plans; @carol has the numbers.")
    await bob.click("#f-save")
    await bob.locator(".card", has_text="Fix signup e-mail").drag_to(
        bob.locator('.cards[data-column="done"]')
    )
    await alice.wait_for_function("document.querySelector('#bell').dataset.unread === '2'")
    await alice.wait_for_selector('.cards[data-column="done"] .card >> text=Fix signup e-mail')
    await alice.wait_for_selector('.card-actor[data-user="bob"]')  # bob's face on what he moved
    await asyncio.sleep(1.0)  # let the ring and toast animations settle (the face stays 4 s)
    await alice.mouse.move(5, 790)
    await alice.screenshot(path=str(out / "board.png"))

    await alice.click("#bell")
    await alice.wait_for_selector(".notification.unread")
    await alice.screenshot(path=str(out / "bell.png"))
    await alice.keyboard.press("Escape")

    await bob_ctx.close()  # bob leaves: his dot goes grey on the phone shot
    phone_ctx, phone = await open_board(browser, url, "alice", PHONE, scale=2)
    contexts.append(phone_ctx)
    await phone.wait_for_function(
        "document.querySelector('#members [data-user=bob]').dataset.status === 'offline'"
    )
    await asyncio.sleep(0.5)
    await phone.screenshot(path=str(out / "board-phone.png"))
    await phone.locator(".card", has_text="Pricing page copy").click()
    await phone.wait_for_selector("#card-dialog[open]")
    await phone.screenshot(path=str(out / "card-phone.png"))
    for context in contexts:
        if context is not bob_ctx:
            await context.close()
    for name in ("board.png", "bell.png", "board-phone.png", "card-phone.png"):
        print(out / name)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img"))
