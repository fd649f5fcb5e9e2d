"""Time to first result of the web app on the bundled example, with an empty and a warm JAX
compilation cache: `animax-app` started, the page opened in Debian's chromium, the example
uploaded with a box, Run clicked, until the status says Done; then a run with two boxes (the
batch of several animals compiles, or loads from the cache, on that first use).

    .venv/bin/python bench/bench_app.py          # prints a table, writes bench/results/app.json
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "standin_quadruped.png"
BOX = "128 96 512 408"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(cache_home: Path, browser) -> dict:
    port = free_port()
    log = cache_home / f"app-{port}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "animax.app", "--port", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=REPO,
                                   env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})
    try:
        while "animax-app: ready" not in log.read_text():
            if process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.2)
        ready = time.perf_counter() - start
        compile_s = float(re.search(r"batches of 1 in ([\d.]+) s", log.read_text()).group(1))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        page.locator("#photos input[type=file]").set_input_files(EXAMPLE)
        page.wait_for_function("() => /Loaded/.test(document.querySelector('#photo-status').innerText)")
        page.locator("#photo-boxes textarea").fill(BOX)
        clicked = time.perf_counter()
        page.click("#photo-run")
        page.wait_for_function("() => /Done/.test(document.querySelector('#photo-status').innerText)",
                               timeout=300_000)
        first = time.perf_counter()
        page.locator("#photo-boxes textarea").fill(BOX + "\n100 80 540 420")
        again = time.perf_counter()
        page.click("#photo-run")
        page.wait_for_function("() => /Done.*2 animals/.test(document.querySelector('#photo-status').innerText)",
                               timeout=300_000)
        second = time.perf_counter()
        page.close()
        return {"start_to_ready_s": ready, "compile_batch1_s": compile_s, "run_click_to_done_s": first - clicked,
                "start_to_first_result_s": first - start, "two_animals_run_s": second - again}
    finally:
        process.terminate()
        process.wait(60)


def main():
    from playwright.sync_api import sync_playwright

    cache_home = Path(tempfile.mkdtemp(prefix="animax-bench-app-"))
    rows = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            rows["empty compilation cache"] = run_once(cache_home, browser)
            rows["warm compilation cache"] = run_once(cache_home, browser)
            browser.close()
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)
    keys = list(next(iter(rows.values())))
    print("| | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "app.json").write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
