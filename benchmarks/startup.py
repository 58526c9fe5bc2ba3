"""Start-up time of `python app.py`: until the page answers, and until /health says the model is ready.

Each round starts the real app on a new, empty CLASSIFR_HOME (v1 is built) and then again on that
same, now warm, home. Prints one row per start and the median of each column (docs/speed.md).

    python benchmarks/startup.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = response.read()
            return response.status, json.loads(body) if url.endswith("health") else None
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None


def time_start(home: Path, timeout_s: float = 180.0) -> tuple[float, float]:
    """(seconds until GET / answers 200, seconds until GET /health answers 200) for one start."""
    port = _free_port()
    env = {**os.environ, "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(port)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        page = ready = None
        while ready is None:
            if process.poll() is not None:
                raise SystemExit(f"app.py exited with {process.returncode} on {home}")
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"app.py did not become ready within {timeout_s:.0f} s")
            if page is None and _status(base)[0] == 200:
                page = time.perf_counter() - started
            if page is not None and _status(base + "health")[0] == 200:
                ready = time.perf_counter() - started
            time.sleep(0.05)
        return page, ready
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="empty + warm starts to time (default 3)")
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {"empty": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="classifr-startup-") as tmp:
        for n in range(args.rounds):
            home = Path(tmp) / f"home-{n}"
            for kind in ("empty", "warm"):
                page, ready = time_start(home)
                rows[kind].append((page, ready))
                print(f"{kind:5s} start {n + 1}: page {page:5.1f} s, model ready {ready:5.1f} s", flush=True)
    for kind, times in rows.items():
        print(f"median {kind}: page {statistics.median(t[0] for t in times):.1f} s, "
              f"model ready {statistics.median(t[1] for t in times):.1f} s")


if __name__ == "__main__":
    main()
