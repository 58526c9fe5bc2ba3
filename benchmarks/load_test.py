"""Load test of the running app: N concurrent gradio_client callers, torch and ONNX side by side.

    python benchmarks/load_test.py [--seconds 120] [--clients 1,4,16] [--backends torch,onnx] [--threads 2] [--no-floor]

For each backend (CLASSIFR_BACKEND=torch, then onnx) it starts `python app.py` as a user does (its
own CLASSIFR_HOME on the same v1, a free port), and for each N runs N threads, each with its own
`gradio_client.Client`, calling `/predict` with the real clothing-small test photos round-robin
(each thread starting at its own offset) for `--seconds`. One table row per backend and N:
requests, throughput, p50/p95/p99 latency (upload + queue + batch + response, as the caller sees
it) and errors (an exception, or a payload without predictions). Before the servers start, the
same photos are classified in process (`service.predict`, one file at a time, prediction log on)
for the in-process end-to-end rate that the app's throughput is compared with.

The callers run on the same machine as the server (2 cores here), so their HTTP work competes
with the server's; the table is what this box does, not what the server would do alone.

The baseline row, "floor" (skip it with --no-floor): the same /predict event, input and outputs
with no model behind it (benchmarks/gradio_floor_app.py), under the same callers. Its CPU per
request (Gradio's and the callers') plus the model's in-process CPU per prediction bounds what
the cores can serve; the last lines print that ceiling next to the target.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from photos import REPO_ROOT  # a script's own folder is on sys.path
from serving import CLOTHING_TEST, ensure_onnx_export, make_service


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="timed seconds per backend and N")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent callers")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CLASSIFR_NUM_THREADS of the server")
    parser.add_argument("--in-process-seconds", type=float, default=None, help="default: min(--seconds, 20)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the baseline row: the same /predict event with no model (benchmarks/gradio_floor_app.py)")
    return parser.parse_args()


FLOOR = "floor"  # the table's name for the no-model baseline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class App:
    """`python app.py` on its own home and port, until stopped (or `script`: the no-model floor)."""

    def __init__(self, registry_home: Path, home: Path, backend: str, threads: int, script: str = "app.py") -> None:
        home.mkdir(parents=True)
        (home / "registry").symlink_to(registry_home / "registry", target_is_directory=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = home / "app.log"
        env = {**os.environ, "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(self.port),
               "CLASSIFR_BACKEND": backend, "CLASSIFR_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False"}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, script], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"app.py did not answer on {self.url}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def serving_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if " serves through " in line]
        return lines[-1].split(": ", 1)[-1] if lines else "(no backend line in the app log)"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (Linux /proc; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_callers(url: str, photos: list[Path], clients: int, seconds: float, server_cpu: Callable[[], float]) -> dict:
    """`clients` threads, each with its own Client, calling /predict for `seconds` after one warm-up call.

    Also the CPU time the server (`server_cpu()`) and this process (the callers) used in the timed
    window, per request (calls still running at its end included: a slight overestimate).
    """
    from gradio_client import Client, handle_file

    # ssl_verify=False: the app is plain HTTP on localhost, so nothing is verified either way, but
    # gradio_client opens a new httpx client for every upload, join and event stream, and each
    # one otherwise loads the CA bundle: about 33 ms of CPU, 160 ms per call in all, which on
    # 2 shared cores would measure the callers rather than the app.
    callers = [Client(url, verbose=False, ssl_verify=False) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    window: dict[str, float] = {"stop": float("inf")}  # set when every caller has warmed up

    def call(client, photo: Path) -> str | None:
        try:
            _, result, _ = client.predict(handle_file(str(photo)), api_name="/predict")
        except Exception as err:  # noqa: BLE001 - every failure a caller sees counts as an error
            return f"{type(err).__name__}: {str(err).strip()[:200]}"
        if not isinstance(result, dict) or "error" in result or not result.get("predictions"):
            return f"bad payload: {str(result)[:200]}"
        return None

    def worker(k: int) -> None:
        client = callers[k]
        i = k * len(photos) // clients
        call(client, photos[i % len(photos)])  # warm-up: the first call opens connections
        ready.wait()
        while True:
            started = time.perf_counter()
            if started >= window["stop"]:
                break
            error = call(client, photos[i % len(photos)])
            finished = time.perf_counter()
            if finished <= window["stop"]:  # a call still running at the end is not counted either way
                (errors[k].append(error) if error else latencies[k].append((finished - started) * 1000))
            i += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    cpu_at_start = server_cpu(), time.process_time()
    window["start"] = time.perf_counter()
    window["stop"] = window["start"] + seconds
    for t in threads:
        t.join(timeout=seconds + 120)
    cpu_used = server_cpu() - cpu_at_start[0], time.process_time() - cpu_at_start[1]
    for client in callers:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
    ordered = sorted(x for per in latencies for x in per)
    all_errors = [e for per in errors for e in per]
    return {
        "requests": len(ordered) + len(all_errors), "ok": len(ordered), "errors": len(all_errors),
        "throughput": len(ordered) / seconds, "p50": percentile(ordered, 0.50), "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99), "first_error": all_errors[0] if all_errors else "",
        "server_cpu_ms": cpu_used[0] * 1000 / max(1, len(ordered) + len(all_errors)),
        "callers_cpu_ms": cpu_used[1] * 1000 / max(1, len(ordered) + len(all_errors)),
    }


def in_process_rate(
    registry_home: Path, home: Path, backend: str, threads: int, photos: list[Path], seconds: float
) -> tuple[float, float, float]:
    """(predictions/s, p50 ms, CPU ms per prediction) of service.predict one file at a time, log on."""
    service = make_service(registry_home, home, backend, threads)
    try:
        for photo in photos[:5]:
            service.predict(photo)
        times: list[float] = []
        stop = time.perf_counter() + seconds
        started, cpu_started = time.perf_counter(), time.process_time()
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            service.predict(photos[i % len(photos)])
            times.append((time.perf_counter() - t0) * 1000)
            i += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return len(times) / elapsed, percentile(sorted(times), 0.5), cpu * 1000 / len(times)
    finally:
        service.close()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from classifr.inference.classifier import configure_runtime
    from classifr.app.project import open_local_registry
    from classifr.app.bootstrap import embedded_default_version

    configure_runtime(args.threads)
    clients = [int(n) for n in args.clients.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    photos = sorted(CLOTHING_TEST.rglob("*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="classifr-load-"))
    registry_home = work / "registry-home"
    registry = open_local_registry(registry_home / "registry", default_version=embedded_default_version())
    print(ensure_onnx_export(registry.local_path("v1")) if "onnx" in backends else "torch only: no export needed")
    print(f"{len(photos)} clothing-small test photos round-robin; server CLASSIFR_NUM_THREADS={args.threads} on "
          f"{os.cpu_count()} cores; callers on the same machine; {args.seconds:g} s per row")

    in_seconds = args.in_process_seconds if args.in_process_seconds is not None else min(args.seconds, 20.0)
    in_process: dict[str, tuple[float, float, float]] = {}
    for backend in backends:
        in_process[backend] = in_process_rate(registry_home, work / f"in-process-{backend}", backend, args.threads, photos, in_seconds)
        rate, p50, cpu_ms = in_process[backend]
        print(f"in process, {backend}: {rate:.1f} predictions/s one at a time (p50 {p50:.1f} ms, "
              f"{cpu_ms:.0f} ms of CPU each), over {in_seconds:g} s")

    servers = [(backend, "app.py") for backend in backends]
    if args.floor:
        servers.append((FLOOR, "benchmarks/gradio_floor_app.py"))
    rows = []
    for name, script in servers:
        app = App(registry_home, work / f"app-{name}", name if name != FLOOR else "auto", args.threads, script)
        try:
            print(f"app with CLASSIFR_BACKEND={name}: {app.serving_line()}" if name != FLOOR else
                  "the same /predict event with no model behind it (benchmarks/gradio_floor_app.py)")
            for n in clients:
                stats = run_callers(app.url, photos, n, args.seconds, app.cpu_seconds)
                rows.append((name, n, stats))
                print(f"  N={n:<3} {stats['requests']:>6} requests  {stats['throughput']:>6.1f} req/s  "
                      f"p50 {stats['p50']:>7.1f}  p95 {stats['p95']:>7.1f}  p99 {stats['p99']:>7.1f} ms  "
                      f"errors {stats['errors']}{'  (' + stats['first_error'] + ')' if stats['errors'] else ''}  "
                      f"CPU per request: server {stats['server_cpu_ms']:.0f} ms, callers {stats['callers_cpu_ms']:.0f} ms", flush=True)
        finally:
            app.stop()
    print_table(rows, in_process)
    print_targets(rows, in_process, max(clients), args.seconds)


def print_table(rows: list[tuple[str, int, dict]], in_process: dict[str, tuple[float, float, float]]) -> None:
    print()
    print(f"{'backend':<8} {'N':>3} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'x in-process':>13} {'server CPU ms/req':>18} {'callers CPU ms/req':>19}")
    for name, n, s in rows:
        ratio = f"{s['throughput'] / in_process[name][0]:>12.2f}x" if name in in_process else f"{'-':>13}"
        print(f"{name:<8} {n:>3} {s['requests']:>9} {s['throughput']:>7.1f} {s['p50']:>8.1f} {s['p95']:>8.1f} "
              f"{s['p99']:>8.1f} {s['errors']:>7} {ratio} {s['server_cpu_ms']:>18.0f} {s['callers_cpu_ms']:>19.0f}")
    for backend, (rate, _, cpu_ms) in in_process.items():
        print(f"{backend:<8} in process {rate:.1f} predictions/s (file -> top-5, one at a time; {cpu_ms:.0f} ms of CPU each)")


def print_targets(rows: list[tuple[str, int, dict]], in_process: dict[str, tuple[float, float, float]], n: int, seconds: float) -> None:
    floor = next((s for name, k, s in rows if name == FLOOR and k == n), None)
    cores = os.cpu_count() or 1
    for backend, k, s in rows:
        if k != n or backend not in in_process:
            continue
        rate, _, model_cpu_ms = in_process[backend]
        ratio = s["throughput"] / rate
        print(f"target, {backend}, N={n}: throughput {ratio:.2f}x in-process (>= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'}), "
              f"{s['errors']} errors in {seconds:g} s ({'met' if s['errors'] == 0 else 'NOT met'}"
              f"{'' if seconds >= 120 else '; the target is over 120 s'}), p95 {s['p95']:.0f} ms")
        if floor is not None:
            # Every request costs Gradio's and the callers' CPU (the floor row) plus the model's, on the
            # same cores; nothing served through this event can do better than that sum allows.
            per_request = floor["server_cpu_ms"] + floor["callers_cpu_ms"] + model_cpu_ms
            ceiling = cores * 1000 / per_request
            print(f"  ceiling on this machine: {cores} cores / ({floor['server_cpu_ms']:.0f} ms Gradio + "
                  f"{floor['callers_cpu_ms']:.0f} ms callers + {model_cpu_ms:.0f} ms model per request) = "
                  f"{ceiling:.1f} req/s = {ceiling / rate:.2f}x in-process; measured {s['throughput'] / ceiling:.2f}x of it")


if __name__ == "__main__":
    main()
