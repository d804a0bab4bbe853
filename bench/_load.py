"""The load generator of ``confirm_load``, run in its own process:
``python -m bench._load BASE_URL TOKENS_FILE CONCURRENCY``.

Each token is one office confirming through its link, as a browser would: GET the page (a fresh
cookie jar: the CSRF token lives in the session cookie), read the form's ``csrf_token``, POST the
form, expect the 303 of Post/Redirect/Get. ``CONCURRENCY`` clients (asyncio tasks, one
keep-alive connection each) take tokens from a shared queue until none is left. Prints one JSON
line: every latency, the status codes seen, the wall time.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

CSRF_FIELD = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)
FORM = {"name": "Nguyễn Thị Thu Hà", "position": "Chánh Văn phòng Sở", "note": ""}


async def _client(
    base_url: str, queue: asyncio.Queue[str], results: dict[str, Any], user_agent: str
) -> None:
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=120,
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    ) as client:
        while True:
            try:
                token = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            client.cookies.clear()  # every office is another browser
            start = time.perf_counter()
            page = await client.get(f"/r/{token}")
            got_page = time.perf_counter()
            results["statuses"][f"GET {page.status_code}"] += 1
            match = CSRF_FIELD.search(page.text)
            if page.status_code != 200 or match is None:
                results["failures"].append(f"GET {token[:8]}…: {page.status_code}")
                continue
            form = {**FORM, "csrf_token": match.group(1) or match.group(2)}
            posted = await client.post(f"/r/{token}", data=form)
            done = time.perf_counter()
            results["statuses"][f"POST {posted.status_code}"] += 1
            if posted.status_code != 303:
                results["failures"].append(f"POST {token[:8]}…: {posted.status_code}")
            results["get_ms"].append((got_page - start) * 1000)
            results["post_ms"].append((done - got_page) * 1000)
            results["confirm_ms"].append((done - start) * 1000)


async def run(base_url: str, tokens: list[str], concurrency: int) -> dict[str, Any]:
    """Confirm every token through ``base_url`` with ``concurrency`` clients."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    results: dict[str, Any] = {
        "statuses": Counter(),
        "failures": [],
        "get_ms": [],
        "post_ms": [],
        "confirm_ms": [],
    }
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _client(base_url, queue, results, f"bench-client/{number}")
            for number in range(concurrency)
        )
    )
    results["seconds"] = time.perf_counter() - start
    results["statuses"] = dict(results["statuses"])
    return results


def main(argv: list[str]) -> int:
    """Run the load and print its figures as JSON."""
    base_url, tokens_file, concurrency = argv
    tokens = Path(tokens_file).read_text().split()
    print(json.dumps(asyncio.run(run(base_url, tokens, int(concurrency)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
