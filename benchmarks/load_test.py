"""Load test of the running app: N concurrent callers on Gradio's /predict and on the HTTP route, torch and ONNX side by side.

    python benchmarks/load_test.py [--seconds 120] [--clients 1,4,16] [--backends torch,onnx] [--routes gradio,http]
                                   [--threads 2] [--no-floor]

A quick check (about 2-3 minutes): --seconds 10 --clients 1,16 --backends torch --no-floor

For each backend (CLASSIFR_BACKEND=torch, then onnx) it starts `python app.py` as a user does (its
own CLASSIFR_HOME on the same registry, a free port, CLASSIFR_API_RATE_LIMIT=0) and for each route
and N runs N caller threads for `--seconds` after one warm-up call each, on the real clothing-small
test photos (400x533) round-robin, each thread starting at its own offset. One table row per
backend, route and N: requests, throughput, p50/p95/p99 latency (as the caller sees it), errors,
throughput against in-process, and the CPU per request of the server and of the callers. Routes:

  - gradio: each thread its own `gradio_client.Client` calling `/predict` (upload + queue + batch +
    event stream); an error is an exception or a payload without predictions.
  - http: each thread its own `requests.Session` (keep-alive) POSTing the raw photo bytes, read once
    up front, to `/v1/models/production`; an error is a status other than 200, a body that is not
    a non-empty list of {label, score}, an `X-Classifr-Version` other than the version asked for
    (production is v1), or no `X-Prediction-Id`.
  - pinned (with http, at the largest N only): the same, half the threads POSTing to `/v1/models/v1`
    and half to `/v1/models/v2` at once. v2 is v1's weights republished (parent v1, not promoted):
    a second loaded model with the same cost per image, so the row measures serving two pinned
    versions at once, not a different model.

Every prediction logged exactly once: the callers keep every `X-Prediction-Id` of a 200 answer
(warm-ups and calls still running at the window's end included). After each app is stopped
(SIGTERM: it writes what its prediction log still holds), the ids are looked up in that app's log
through the monitoring package's own queries: responses, api rows logged (from the first HTTP call
on: the Gradio rows run before, and gradio_client callers are logged as api too), ids missing, ids
duplicated. Exactly once: no id missing or repeated, and as many api rows as responses.

Before the servers start, the same photos are classified in process (`service.predict`, one file at
a time, prediction log on, in a fresh interpreter so that this one's PyTorch work cannot slow it):
the in-process end-to-end rate and p50 that the targets compare with.
The callers run on the same machine as the server (2 cores here), so their HTTP work competes
with the server's; the table is what this box does, not what the server would do alone.

The baseline row, "floor" (skip it with --no-floor): the same /predict event, input and outputs
with no model behind it (benchmarks/gradio_floor_app.py), under the same gradio callers. Its CPU
per request (Gradio's and the callers') plus the model's in-process CPU per prediction bounds what
the cores can serve through Gradio; the target lines print that ceiling.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from photos import REPO_ROOT  # a script's own folder is on sys.path
from serving import CLOTHING_TEST, ensure_onnx_export, make_service

ROUTES = ("gradio", "http")
FLOOR = "floor"  # the table's name for the no-model baseline
PINNED = "pinned"  # the table's route name for the v1 + v2 row
PRODUCTION_VERSION = "v1"  # the bootstrapped registry's production version
PREDICTION_ID = re.compile(r"[0-9a-f]{32}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="timed seconds per backend, route and N")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent callers")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--routes", default=",".join(ROUTES),
                        help="comma-separated: gradio (the /predict event), http (/v1/models/production, and the pinned row)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CLASSIFR_NUM_THREADS of the server")
    parser.add_argument("--in-process-seconds", type=float, default=None, help="default: min(--seconds, 20)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the baseline row: the same /predict event with no model (benchmarks/gradio_floor_app.py)")
    args = parser.parse_args()
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in args.routes if r not in ROUTES]
    if unknown or not args.routes:
        parser.error(f"--routes takes {', '.join(ROUTES)}; got {unknown or args.routes!r}")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class App:
    """`python app.py` on its own home and port, until stopped (or `script`: the no-model floor).

    Ready once GET `ready_path` answers 200: for app.py "health", so the model is loaded before the
    first row (the page answers while it still loads in the background) and its backend line is logged.
    """

    def __init__(
        self, registry_home: Path, home: Path, backend: str, threads: int, script: str = "app.py", ready_path: str = ""
    ) -> None:
        home.mkdir(parents=True)
        (home / "registry").symlink_to(registry_home / "registry", target_is_directory=True)
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = home / "app.log"
        self.exit_code: int | None = None
        # No rate limit: every caller is this one client address, which the limit is meant to hold back.
        env = {**os.environ, "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(self.port),
               "CLASSIFR_BACKEND": backend, "CLASSIFR_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False",
               "CLASSIFR_API_RATE_LIMIT": "0"}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, script], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"app.py did not answer on {self.url}{ready_path}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def serving_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if " serves through " in line]
        return lines[0].split(": ", 1)[-1] if lines else "(no backend line in the app log)"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (Linux /proc; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> None:
        """SIGTERM, which lets the app write what its prediction log still holds; killed after 30 s."""
        self.process.terminate()
        try:
            self.exit_code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.exit_code = None  # killed: its log may miss what it still held


# --- the timing window, shared by every route -------------------------------------------------------


Call = Callable[[int, int], str | None]  # call(caller k, photo index i) -> an error, or None


def run_window(call: Call, clients: int, photo_count: int, seconds: float, server_cpu: Callable[[], float]) -> dict:
    """`clients` threads each running `call(k, i)` for `seconds` after one warm-up call, photos
    round-robin from each thread's own offset.

    Also the CPU time the server (`server_cpu()`) and this process (the callers) used in the timed
    window, per request (calls still running at its end included: a slight overestimate).
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    window: dict[str, float] = {"stop": float("inf")}  # set when every caller has warmed up

    def worker(k: int) -> None:
        i = k * photo_count // clients
        call(k, i % photo_count)  # warm-up: the first call opens connections (and may wait for the model)
        ready.wait()
        while True:
            started = time.perf_counter()
            if started >= window["stop"]:
                break
            error = call(k, i % photo_count)
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
    ordered = sorted(x for per in latencies for x in per)
    all_errors = [e for per in errors for e in per]
    return {
        "requests": len(ordered) + len(all_errors), "ok": len(ordered), "errors": len(all_errors),
        "throughput": len(ordered) / seconds, "p50": percentile(ordered, 0.50), "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99), "first_error": all_errors[0] if all_errors else "",
        "server_cpu_ms": cpu_used[0] * 1000 / max(1, len(ordered) + len(all_errors)),
        "callers_cpu_ms": cpu_used[1] * 1000 / max(1, len(ordered) + len(all_errors)),
    }


# --- the routes: only the call differs ----------------------------------------------------------------


def run_gradio_callers(url: str, photos: list[Path], clients: int, seconds: float, server_cpu: Callable[[], float]) -> dict:
    """`clients` threads, each with its own Client, calling /predict."""
    from gradio_client import Client, handle_file

    # ssl_verify=False: the app is plain HTTP on localhost, so nothing is verified either way, but
    # gradio_client opens a new httpx client for every upload, join and event stream, and each
    # one otherwise loads the CA bundle: about 33 ms of CPU, 160 ms per call in all, which on
    # 2 shared cores would measure the callers rather than the app.
    callers = [Client(url, verbose=False, ssl_verify=False) for _ in range(clients)]

    def call(k: int, i: int) -> str | None:
        try:
            _, result, _ = callers[k].predict(handle_file(str(photos[i])), api_name="/predict")
        except Exception as err:  # noqa: BLE001 - every failure a caller sees counts as an error
            return f"{type(err).__name__}: {str(err).strip()[:200]}"
        if not isinstance(result, dict) or "error" in result or not result.get("predictions"):
            return f"bad payload: {str(result)[:200]}"
        return None

    try:
        return run_window(call, clients, len(photos), seconds, server_cpu)
    finally:
        for client in callers:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def run_http_callers(
    url: str, payloads: list[bytes], refs: list[str], seconds: float, server_cpu: Callable[[], float]
) -> dict:
    """One thread per entry of `refs`, each with its own keep-alive Session, POSTing raw photo bytes
    to /v1/models/{ref}. The result also holds every prediction id of a 200 answer."""
    import requests

    sessions = [requests.Session() for _ in refs]
    ids: list[list[str]] = [[] for _ in refs]

    def call(k: int, i: int) -> str | None:
        try:
            response = sessions[k].post(f"{url}v1/models/{refs[k]}", data=payloads[i], timeout=120)
        except requests.RequestException as err:
            return f"{type(err).__name__}: {str(err).strip()[:200]}"
        return check_http_answer(response, refs[k], ids[k])

    try:
        stats = run_window(call, len(refs), len(payloads), seconds, server_cpu)
    finally:
        for session in sessions:
            session.close()
    stats["prediction_ids"] = [x for per in ids for x in per]
    return stats


def check_http_answer(response, ref: str, ids: list[str]) -> str | None:
    """None for a right answer, else the error; a 200 answer's prediction id goes into `ids`."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text.strip()[:200]}"
    prediction_id = response.headers.get("X-Prediction-Id", "")
    if PREDICTION_ID.fullmatch(prediction_id):
        ids.append(prediction_id)
    else:
        return f"X-Prediction-Id is {prediction_id!r}, not 32 hex digits"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text.strip()[:200]}"
    if not isinstance(body, list) or not body or not all(
        isinstance(item, dict) and isinstance(item.get("label"), str)
        and isinstance(item.get("score"), (int, float)) and not isinstance(item.get("score"), bool)
        for item in body
    ):
        return f"not a non-empty list of {{label, score}}: {str(body)[:200]}"
    expected = PRODUCTION_VERSION if ref == "production" else ref
    served = response.headers.get("X-Classifr-Version")
    if served != expected:
        asked = ref if ref == expected else f"{ref} ({expected})"
        return f"asked for {asked}, X-Classifr-Version is {served!r}"
    return None


# --- every prediction logged exactly once ---------------------------------------------------------------


@dataclass
class LogCheck:
    """One app's HTTP answers against its prediction log, read after the app stopped."""

    responses: int = 0
    api_rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)  # per row label
    duplicated: dict[str, int] = field(default_factory=dict)

    def exactly_once(self, row: str) -> bool:
        return self.missing.get(row) == 0 and self.duplicated.get(row) == 0 and self.api_rows == self.responses

    def line(self, row: str) -> str:
        return (f"{self.missing.get(row, '?')} ids missing, {self.duplicated.get(row, '?')} duplicated; "
                f"the app logged {self.api_rows} api rows for its {self.responses} HTTP responses")


def check_prediction_log(home: Path, ids_by_row: dict[str, list[str]], since: float) -> LogCheck:
    """Look every id up in the app's log (through its own queries) and count its api rows from `since`
    (unix seconds) on: gradio_client callers are logged as api too, so only the HTTP rows' time counts."""
    from classifr.app.project import open_prediction_log
    from classifr.core.config import Settings

    check = LogCheck(responses=sum(len(ids) for ids in ids_by_row.values()))
    log = open_prediction_log(Settings.from_env({"CLASSIFR_HOME": str(home)}))
    if log is None:
        raise SystemExit(f"{home} has no prediction log (CLASSIFR_PREDICTION_LOG=0?): nothing to check")
    try:
        summary = log.summary(since=since)
        check.api_rows = sum(entry["by_source"].get("api", 0) for entry in summary["by_version"].values())
        for row, ids in ids_by_row.items():
            check.duplicated[row] = len(ids) - len(set(ids))
            check.missing[row] = sum(1 for prediction_id in set(ids) if log.prediction(prediction_id) is None)
    finally:
        log.close()
    return check


# --- the registry's second version, for the pinned row -----------------------------------------------


def publish_v1_copy(registry) -> str:
    """v1's folder republished as the next version (parent v1, not promoted); returns its name."""
    source = registry.local_path("v1")

    def write(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)  # the registry replaces its own record files
        (folder / "README.md").write_text(
            "# v1 republished\n\nv1's weights published again by benchmarks/load_test.py, so that two versions "
            "can be pinned at once.\n")

    info = registry.publish(write, parent="v1", metadata={"note": "v1's weights republished by benchmarks/load_test.py"})
    return info.version


# --- in process ----------------------------------------------------------------------------------------


def in_process_rate(
    registry_home: Path, home: Path, backend: str, threads: int, photos: list[Path], seconds: float
) -> tuple[float, float, float]:
    """(predictions/s, p50 ms, CPU ms per prediction) of service.predict one file at a time, log on,
    measured in a fresh interpreter: this one has run PyTorch on its main thread (the bootstrap,
    the export), which would slow the service's forward thread (docs/speed.md, "One forward thread")
    and flatter the app beside it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_in_process_rate, registry_home, home, backend, threads, photos, seconds).result()


def _in_process_rate(
    registry_home: Path, home: Path, backend: str, threads: int, photos: list[Path], seconds: float
) -> tuple[float, float, float]:
    from classifr.inference.classifier import configure_runtime

    configure_runtime(threads)
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


# --- the run -------------------------------------------------------------------------------------------


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
    payloads = [photo.read_bytes() for photo in photos]  # read once: file I/O is not what is measured
    work = Path(tempfile.mkdtemp(prefix="classifr-load-"))
    registry_home = work / "registry-home"
    registry = open_local_registry(registry_home / "registry", default_version=embedded_default_version())
    print(ensure_onnx_export(registry.local_path("v1")) if "onnx" in backends else "torch only: no export needed")
    pinned_n = max(clients) if "http" in args.routes and max(clients) >= 2 else None
    if pinned_n is not None:
        second = publish_v1_copy(registry)
        pinned_refs = ["v1" if k % 2 == 0 else second for k in range(pinned_n)]
        print(f"pinned row: {pinned_n} callers, half on /v1/models/v1, half on /v1/models/{second}; {second} is v1's "
              "weights republished (parent v1, not promoted): a second loaded model, the same cost per image")
    # Other work on the machine takes cores from the server, the callers and the in-process baseline alike.
    print(f"load average at start {os.getloadavg()[0]:.2f} (above about 0.5, other work shares the cores)")
    print(f"{len(photos)} clothing-small test photos round-robin; server CLASSIFR_NUM_THREADS={args.threads} on "
          f"{os.cpu_count()} cores; callers on the same machine; routes {', '.join(args.routes)}; {args.seconds:g} s per row")

    in_seconds = args.in_process_seconds if args.in_process_seconds is not None else min(args.seconds, 20.0)
    in_process: dict[str, tuple[float, float, float]] = {}
    for backend in backends:
        in_process[backend] = in_process_rate(registry_home, work / f"in-process-{backend}", backend, args.threads, photos, in_seconds)
        rate, p50, cpu_ms = in_process[backend]
        print(f"in process, {backend}: {rate:.1f} predictions/s one at a time (p50 {p50:.1f} ms, "
              f"{cpu_ms:.0f} ms of CPU each), over {in_seconds:g} s")

    servers = [(backend, "app.py") for backend in backends]
    if args.floor and "gradio" in args.routes:
        servers.append((FLOOR, "benchmarks/gradio_floor_app.py"))
    rows: list[tuple[str, str, int, dict]] = []
    log_checks: dict[str, LogCheck] = {}
    for name, script in servers:
        if name == FLOOR:
            app = App(registry_home, work / f"app-{name}", "auto", args.threads, script)
        else:
            app = App(registry_home, work / f"app-{name}", name, args.threads, script, ready_path="health")
        ids_by_row: dict[str, list[str]] = {}
        http_since = float("inf")  # when the first HTTP caller started: the Gradio rows are all done by then
        try:
            print(f"app with CLASSIFR_BACKEND={name}: {app.serving_line()}" if name != FLOOR else
                  "the same /predict event with no model behind it (benchmarks/gradio_floor_app.py)")
            # (route, N, the HTTP callers' refs; None for Gradio's callers)
            runs: list[tuple[str, int, list[str] | None]] = []
            if "gradio" in args.routes:
                runs += [("gradio", n, None) for n in clients]
            if "http" in args.routes and name != FLOOR:
                runs += [("http", n, ["production"] * n) for n in clients]
                if pinned_n is not None:
                    runs.append((PINNED, pinned_n, pinned_refs))
            for route, n, refs in runs:
                if refs is None:
                    stats = run_gradio_callers(app.url, photos, n, args.seconds, app.cpu_seconds)
                else:
                    http_since = min(http_since, time.time())
                    stats = run_http_callers(app.url, payloads, refs, args.seconds, app.cpu_seconds)
                    ids_by_row[row_label(route, n)] = stats.pop("prediction_ids")
                rows.append((name, route, n, stats))
                print_row(route, n, stats)
        finally:
            app.stop()
        if ids_by_row:
            check = log_checks[name] = check_prediction_log(app.home, ids_by_row, http_since)
            missing, duplicated = sum(check.missing.values()), sum(check.duplicated.values())
            print(f"  prediction log of the {name} app (SIGTERM: {'killed after 30 s' if app.exit_code is None else f'exit code {app.exit_code}'}): "
                  f"{check.responses} HTTP responses (warm-ups included), {check.api_rows} api rows logged from the first HTTP call on, "
                  f"{missing} ids missing, {duplicated} ids duplicated", flush=True)
    print_table(rows, in_process)
    print_targets(rows, in_process, log_checks, max(clients), args.seconds)


def row_label(route: str, n: int) -> str:
    return f"{route} N={n}"


def print_row(route: str, n: int, stats: dict) -> None:
    print(f"  {route:<6} N={n:<3} {stats['requests']:>6} requests  {stats['throughput']:>6.1f} req/s  "
          f"p50 {stats['p50']:>7.1f}  p95 {stats['p95']:>7.1f}  p99 {stats['p99']:>7.1f} ms  "
          f"errors {stats['errors']}{'  (' + stats['first_error'] + ')' if stats['errors'] else ''}  "
          f"CPU per request: server {stats['server_cpu_ms']:.0f} ms, callers {stats['callers_cpu_ms']:.0f} ms", flush=True)


def print_table(rows: list[tuple[str, str, int, dict]], in_process: dict[str, tuple[float, float, float]]) -> None:
    print()
    print(f"{'backend':<8} {'route':<7} {'N':>3} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'x in-process':>13} {'server CPU ms/req':>18} {'callers CPU ms/req':>19}")
    for name, route, n, s in rows:
        ratio = f"{s['throughput'] / in_process[name][0]:>12.2f}x" if name in in_process else f"{'-':>13}"
        print(f"{name:<8} {route:<7} {n:>3} {s['requests']:>9} {s['throughput']:>7.1f} {s['p50']:>8.1f} {s['p95']:>8.1f} "
              f"{s['p99']:>8.1f} {s['errors']:>7} {ratio} {s['server_cpu_ms']:>18.0f} {s['callers_cpu_ms']:>19.0f}")
    for backend, (rate, p50, cpu_ms) in in_process.items():
        print(f"{backend:<8} in process {rate:.1f} predictions/s, p50 {p50:.1f} ms "
              f"(file -> top-5, one at a time; {cpu_ms:.0f} ms of CPU each)")


def print_targets(
    rows: list[tuple[str, str, int, dict]], in_process: dict[str, tuple[float, float, float]],
    log_checks: dict[str, LogCheck], n: int, seconds: float,
) -> None:
    floor = next((s for name, route, k, s in rows if name == FLOOR and k == n), None)
    for backend, route, k, s in rows:
        if backend not in in_process:
            continue
        rate, in_p50, model_cpu_ms = in_process[backend]
        if route == "http" and k == 1:
            met = s["p50"] <= in_p50 + 5
            print(f"target, {backend}, http, N=1: p50 round trip {s['p50']:.1f} ms <= in-process p50 {in_p50:.1f} ms + 5 ms "
                  f"({'met' if met else 'NOT met'}), {s['errors']} errors")
        if k != n:
            continue
        ratio = s["throughput"] / rate
        line = (f"target, {backend}, {route}, N={n}: throughput {ratio:.2f}x in-process "
                f"({s['throughput']:.1f} against {rate:.1f} req/s; >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'}), "
                f"{s['errors']} errors in {seconds:g} s ({'met' if s['errors'] == 0 else 'NOT met'}"
                f"{'' if seconds >= 120 else '; the target is over 120 s'}), p95 {s['p95']:.0f} ms")
        if route == PINNED:
            line += " (v1 + v2: v2 is v1's weights republished)"
        print(line)
        if route in ("http", PINNED) and backend in log_checks:
            check = log_checks[backend]
            label = row_label(route, n)
            print(f"  logged exactly once: {'met' if check.exactly_once(label) else 'NOT met'} ({check.line(label)})")
        if route == "gradio" and floor is not None:
            print_gradio_ceiling(floor, s, rate, model_cpu_ms)


def print_gradio_ceiling(floor: dict, s: dict, rate: float, model_cpu_ms: float) -> None:
    cores = os.cpu_count() or 1
    # Every request costs Gradio's and the callers' CPU (the floor row) plus the model's, on the
    # same cores; nothing served through this event can do better than that sum allows.
    per_request = floor["server_cpu_ms"] + floor["callers_cpu_ms"] + model_cpu_ms
    ceiling = cores * 1000 / per_request
    print(f"  ceiling on this machine: {cores} cores / ({floor['server_cpu_ms']:.0f} ms Gradio + "
          f"{floor['callers_cpu_ms']:.0f} ms callers + {model_cpu_ms:.0f} ms model per request) = "
          f"{ceiling:.1f} req/s = {ceiling / rate:.2f}x in-process; measured {s['throughput'] / ceiling:.2f}x of it")


if __name__ == "__main__":
    main()
