"""Online password guessing against ``/admin/login``: how many guesses the server checks.

``python -m bench.login_guesses URL [--seconds 5] [--concurrency 20] [--form]`` keeps
``--concurrency`` wrong guesses in flight for ``--seconds`` and counts the answers: 401
means the server compared the guess with ``admin.password``, 429 that it refused without
looking (login throttling). ``--form`` posts the way the admin page did before its login
became a JSON POST (a form body, no Origin), to measure an older server. Prints one
line. Bounded in time and concurrency; point it at a server of your own on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

import aiohttp


async def guess(url: str, seconds: float, concurrency: int, form: bool) -> str:
    counts: collections.Counter[int] = collections.Counter()
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        tries = 0
        while time.monotonic() < deadline:
            tries += 1
            password = f"guess-{n}-{tries}"
            if form:
                kwargs: dict = {"data": {"password": password}, "allow_redirects": False}
            else:
                kwargs = {"json": {"password": password}, "headers": {"Origin": url}}
            async with session.post(url + "/admin/login", **kwargs) as response:
                await response.read()
                counts[response.status] += 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    checked = counts[401]
    return (
        f"{sum(counts.values())} requests in {elapsed:.1f} s, answers {dict(counts)}: "
        f"{checked} guesses checked = {checked / elapsed:.2f} guesses/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--form", action="store_true", help="post a form (servers before)")
    args = parser.parse_args()
    print(asyncio.run(guess(args.url.rstrip("/"), args.seconds, args.concurrency, args.form)))


if __name__ == "__main__":
    main()
