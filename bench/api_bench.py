"""API benchmark: one uvicorn worker of the churn API against the reference-style baseline.

Prints one table: startup time to /ready 200, RSS, latency at a fixed open-loop rate
(default 300 req/s) and throughput at saturation, each beside the baseline measured in the
same run, with the targets. The baseline is a plain FastAPI endpoint that builds a one-row
pandas DataFrame and calls the model's `predict_proba`, as the reference project did; it
lives only here.

Both servers run as separate processes (`--serve-baseline` is this file's server mode), on
127.0.0.1, with the same registered model. The load generator runs in this process: raw
HTTP/1.1 keep-alive over asyncio streams (no client library in the hot loop), so it needs
nothing beyond the standard library. Modes:
- rate: open loop; request i is due at t0 + i/rate and its latency is counted from that due
  time (queueing for a connection included, no coordinated omission), or from when the
  generator woke if its own timer fired late;
- saturation: closed loop; `--connections` clients send back to back.
Loads are bounded in count and time, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from apps.api.samples import typical_row
from apps.api.testkit import boosting_model, card_for, free_port, logistic_pipeline, register
from churn.features.schema import feature_specs
from churn.invocation.workdir import enter_invocation_directory

READY_TIMEOUT = 60.0
# The API's image has no pandas; scikit-learn imports pandas whenever it is importable, which
# would add ~40 MiB and startup time here. So the API process runs with pandas unavailable.
# `--compare-pure` also runs the API with uvloop/httptools hidden the same way, to show
# what they buy (uvicorn then falls back to asyncio + h11).
API_WITHOUT = """
import importlib.abc, runpy, sys
HIDDEN = {hidden!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ImportError(name + " is not available to the API")
sys.meta_path.insert(0, Hide())
sys.argv[0] = "api"
runpy.run_module("apps.api.main", run_name="__main__")
"""


# ---------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, errors, and the wall time of the run."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def http_request(path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        """Send `request`; return the response status (body read and discarded)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def saturate(port: int, request: bytes, connections: int, seconds: float) -> LoadResult:
    """Closed loop: every connection sends back to back for `seconds`."""
    result = LoadResult()
    pool = [await Connection.open(port) for _ in range(connections)]
    deadline = time.perf_counter() + seconds

    async def client(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status = await conn.exchange(request)
            if status == 200:
                result.latencies.append(time.perf_counter() - start)
            else:
                result.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in pool))
    result.seconds = time.perf_counter() - started
    for conn in pool:
        conn.close()
    return result


async def open_loop(port: int, request: bytes, rate: float, seconds: float, connections: int) -> LoadResult:
    """Open loop at `rate` req/s; latency measured from each request's due time."""
    result = LoadResult()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    tasks = []

    async def fire(due: float) -> None:
        # Latency counts from the due time, or from when this generator actually got to the
        # request if it woke late itself (timer granularity is not the server's fault);
        # waiting for a busy connection is counted.
        start = max(due, loop.time())
        conn = await idle.get()
        status = await conn.exchange(request)
        if status == 200:
            result.latencies.append(loop.time() - start)
        else:
            result.errors += 1
        idle.put_nowait(conn)

    for i in range(total):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(due)))
    await asyncio.gather(*tasks)
    result.seconds = loop.time() - t0
    while not idle.empty():
        idle.get_nowait().close()
    return result


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    startup_seconds: float

    def rss_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the server process in MiB."""
        values = {}
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024.0
        return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(name: str, command: list[str], port: int, env: dict[str, str]) -> Server:
    """Start a server process; startup time = spawn until /ready answers 200."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {' '.join(command)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
                if response.status == 200:
                    return Server(name, process, port, time.perf_counter() - started)
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    process.kill()
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT} s")


def serve_baseline(root: str, port: int) -> None:
    """The reference-style endpoint: pandas DataFrame per request, plain predict_proba."""
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI

    from churn.features.schema import encode_records
    from churn.registry.registry import ModelRegistry

    registry = ModelRegistry(root)
    loaded = registry.load(registry.get_alias("production") or "")
    specs = feature_specs()
    names = [s.name for s in specs]
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(payload: dict[str, Any]) -> dict[str, Any]:
        frame = pd.DataFrame([payload["features"]])[names]
        matrix = encode_records(specs, frame.to_dict("records"))
        risk = float(loaded.model.predict_proba(matrix)[0, 1])
        return {"user_id": payload.get("user_id"), "churn_risk": risk, "model_version": loaded.version}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the run


@dataclass
class Figures:
    startup_s: float
    rss_mb: float
    peak_rss_mb: float
    rate: LoadResult
    saturation: LoadResult
    cpu_us_per_request: float  # server CPU per request at saturation: robust to a busy machine


def measure(server: Server, request: bytes, args: argparse.Namespace) -> Figures:
    asyncio.run(saturate(server.port, request, 4, 1.0))  # warm-up (first-call costs, caches)
    rate = asyncio.run(open_loop(server.port, request, args.rate, args.seconds, args.connections))
    cpu_before = server.cpu_seconds()
    saturation = asyncio.run(saturate(server.port, request, args.connections, args.seconds))
    cpu = server.cpu_seconds() - cpu_before
    rss, peak = server.rss_mb()
    served = len(saturation.latencies) + saturation.errors
    return Figures(server.startup_seconds, rss, peak, rate, saturation, 1e6 * cpu / max(served, 1))


def prepare_root(root: Path, kind: str) -> str:
    specs = feature_specs()
    if kind == "logistic":
        return register(root, logistic_pipeline(specs), card_for(specs))
    model = boosting_model(specs)
    return register(root, model, card_for(specs, kind="hist_gradient_boosting"))


PURE = "API, asyncio+h11"


def api_command(hidden: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-c", API_WITHOUT.format(hidden=set(hidden)), "--host", "127.0.0.1"]


def accelerators() -> str:
    """Which optional uvicorn accelerators are importable here (the API uses them if so)."""
    import importlib.util

    found = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name) is not None]
    return "+".join(found) if found else "none (asyncio+h11)"


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    body = json.dumps({"user_id": 42, "features": typical_row(feature_specs())}).encode()
    request = http_request("/predict", body)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root or tmp)
        if args.data_root:
            from churn.registry.registry import ModelRegistry

            version = ModelRegistry(root).get_alias("production") or "none"
            model_name = f"production of {root}"
        else:
            version = prepare_root(root, args.model)
            model_name = f"{args.model} (trained on random rows)"
        env["CHURN_DATA_ROOT"] = str(root)
        commands = {"churn API": api_command(("pandas",))}
        if args.compare_pure:
            commands[PURE] = api_command(("pandas", "uvloop", "httptools"))
        commands["baseline"] = [sys.executable, os.path.abspath(__file__), "--serve-baseline", "--root", str(root)]
        figures: dict[str, Figures] = {}
        for name, command in commands.items():
            port = free_port()
            server = start_server(name, command + ["--port", str(port)], port, env)
            try:
                figures[name] = measure(server, request, args)
            finally:
                server.stop()
    text, all_ok = format_table(figures, args)
    print(f"API bench: model {model_name}, version {version}; one uvicorn worker per server on 127.0.0.1; "
          f"API accelerators: {accelerators()}; API process without pandas (as in its image); "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load generator: this process, asyncio, "
          f"{args.connections} connections, {args.seconds:g} s per phase; "
          f"load average before: {load_before:.1f}")
    print(text)
    return 0 if all_ok else 1


Row = tuple[str, Callable[[Figures], str], str, Callable[[Figures, Figures], bool] | None]


def rows_for(args: argparse.Namespace) -> list[Row]:
    """(figure, how to print it, target, check of the API against the baseline)."""
    rate = f"{args.rate:g} req/s"
    return [
        ("startup to /ready 200 (s)", lambda f: f"{f.startup_s:.2f}", "< 3", lambda a, b: a.startup_s < 3.0),
        ("RSS after load (MiB)", lambda f: f"{f.rss_mb:.0f}", "< 200", lambda a, b: a.peak_rss_mb < 200.0),
        (f"p50 at {rate} (ms)", lambda f: f"{f.rate.percentile_ms(50):.2f}", "", None),
        (f"p99 at {rate} (ms)", lambda f: f"{f.rate.percentile_ms(99):.2f}", "< 5",
         lambda a, b: a.rate.percentile_ms(99) < 5.0),
        ("saturation throughput (req/s)", lambda f: f"{f.saturation.throughput:.0f}", ">= 1000",
         lambda a, b: a.saturation.throughput >= 1000.0),
        ("p99 at saturation (ms)", lambda f: f"{f.saturation.percentile_ms(99):.2f}", "", None),
        ("server CPU per request (us)", lambda f: f"{f.cpu_us_per_request:.0f}", "", None),
        ("errors (non-200)", lambda f: str(f.rate.errors + f.saturation.errors), "0",
         lambda a, b: a.rate.errors + a.saturation.errors == 0),
    ]


def format_table(figures: dict[str, Figures], args: argparse.Namespace) -> tuple[str, bool]:
    """The table (API first, baseline last) and whether every target held."""
    api, base = figures["churn API"], figures["baseline"]
    names = list(figures)
    cells = [["figure", *names, "target", "ok"]]
    all_ok = True
    for label, show, target, check in rows_for(args):
        ok = None if check is None else check(api, base)
        all_ok = all_ok and ok is not False
        cells.append([label, *(show(figures[n]) for n in names), target, "" if ok is None else ("yes" if ok else "NO")])
    ratio = api.saturation.throughput / base.saturation.throughput if base.saturation.throughput else float("inf")
    all_ok = all_ok and ratio >= 3.0
    cells.append(["throughput vs baseline",
                  *(f"{figures[n].saturation.throughput / base.saturation.throughput:.1f}x" for n in names),
                  ">= 3x", "yes" if ratio >= 3.0 else "NO"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), all_ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("boosting", "logistic"), default="boosting",
                        help="model served by both (default: boosting, the usual production candidate)")
    parser.add_argument("--data-root", help="serve the production model of this seeded data root instead")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop rate, req/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load phase")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--compare-pure", action="store_true",
                        help="also run the API with uvloop/httptools hidden (what they buy)")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    enter_invocation_directory()  # --data-root and the default ./var as the user typed them
    args = parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.root, args.port)
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
