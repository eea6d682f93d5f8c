"""API benchmark: issue #15's targets, each beside an honest baseline measured in the same run.

`bazel run //bench:api_bench [-- --model candidate|baseline --seconds 10]` prints one table:
image size, process start to /ready 200, RSS after the load phases and after a hostile phase,
single-row saturation on one worker, p99 at 300 req/s, and well-behaved clients' p99 and
failures during the hostile phase; for the churn API and for the baseline
(bench/api_baseline.py: the reference's design, a one-row DataFrame and the pickled
pipeline's predict_proba per request, with thread pools capped as the API's are); with the
load average (1 min) when each figure was taken, since the machine may be shared.

The model is the production candidate trained by the real pipeline: `bootstrap`'s steps
(generate .. train) run into a temporary data root and the gradient-boosting candidate is
promoted (`--model baseline`: the logistic baseline). Requests carry real feature rows of
that data set (the newest as-of date), cycled.

Both servers are separate processes on 127.0.0.1, one uvicorn worker each, with
OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1, started from the images' import layout (the
wheels in one site-packages directory: `image_layout_path`). Memory is the server's RSS plus
the private pages of its child processes (the API's forked batch workers: `Server.rss_mib`). The baseline's p99 is measured at
min(rate, half its own saturation), so its figure is latency, not queue growth. The load
generator runs in this process (raw HTTP/1.1 keep-alive over asyncio streams); the hostile
clients run in a child process (this file with `--attack`), bounded in count, bytes and time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from image_size import layout_sizes
from tools.testing.loopback import free_port

READY_TIMEOUT = 120.0
RUNFILES = Path(os.environ.get("RUNFILES_DIR") or Path(os.path.abspath(__file__)).parents[2])  # <runfiles>/_main/bench/
API_IMAGE = "_main/apps/api/image"
BASELINE_IMAGE = "_main/bench/baseline_image"
THREAD_CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
API_MAIN = "import runpy, sys; sys.argv[0] = 'api'; runpy.run_module('apps.api.main', run_name='__main__')"
BASELINE_MAIN = "import runpy, sys; runpy.run_module('bench.api_baseline', run_name='__main__')"
CLIENT_TIMEOUT = 2.0  # a well-behaved client's (and the readiness probe's) timeout, seconds


# ---------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, failures, and the wall time of the run."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def http_request(path: str, body: bytes, method: str = "POST") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
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


class Requests:
    """Prepared /predict requests (real rows), handed out round robin."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests, self.i = requests, 0

    def next(self) -> bytes:
        self.i = (self.i + 1) % len(self.requests)
        return self.requests[self.i]


async def saturate(port: int, requests: Requests, connections: int, seconds: float) -> LoadResult:
    """Closed loop: every connection sends back to back for `seconds`."""
    result = LoadResult()
    pool = [await Connection.open(port) for _ in range(connections)]
    deadline = time.perf_counter() + seconds

    async def client(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            if await conn.exchange(requests.next()) == 200:
                result.latencies.append(time.perf_counter() - start)
            else:
                result.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in pool))
    result.seconds = time.perf_counter() - started
    for conn in pool:
        conn.close()
    return result


async def open_loop(port: int, requests: Requests, rate: float, seconds: float, connections: int,
                    timeout: float | None = None) -> LoadResult:
    """Open loop at `rate` req/s; latency from each request's due time (no coordinated omission).

    With `timeout` (the hostile phase), a request not answered 200 within it, or whose
    connection fails, is a failure; its connection is replaced.
    """
    result = LoadResult()
    idle: asyncio.Queue[Connection | None] = asyncio.Queue()  # None: a slot whose connection failed
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    tasks = []

    async def fire(due: float) -> None:
        # from the due time, or from when this generator got to it if its own timer was late
        start = max(due, loop.time())
        conn = await idle.get()
        try:
            if conn is None:
                conn = await asyncio.wait_for(Connection.open(port), timeout)
            status = await asyncio.wait_for(conn.exchange(requests.next()), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            if conn is not None:
                conn.close()
            result.failures += 1
            idle.put_nowait(None)
            return
        if status == 200:
            result.latencies.append(loop.time() - start)
        else:
            result.failures += 1
        idle.put_nowait(conn)

    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(due)))
    await asyncio.gather(*tasks)
    result.seconds = loop.time() - t0
    while not idle.empty():
        if (conn := idle.get_nowait()) is not None:
            conn.close()
    return result


async def probe_ready(port: int, seconds: float, interval: float = 0.5) -> LoadResult:
    """GET /ready every `interval` with the readiness probe's 2 s timeout, on a new connection."""
    result = LoadResult()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            conn = await asyncio.wait_for(Connection.open(port), CLIENT_TIMEOUT)
            status = await asyncio.wait_for(conn.exchange(http_request("/ready", b"", "GET")), CLIENT_TIMEOUT)
            conn.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            status = 0
        if status == 200:
            result.latencies.append(time.perf_counter() - start)
        else:
            result.failures += 1
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
    result.seconds = seconds
    return result


# ---------------------------------------------------------------- the hostile clients

# The attacks of issue #15, each bounded (connections, bytes, time). Counts per attack:
IDLE, TRICKLE, HUGE_HEADER, INVALID_BATCH, VALID_BATCH, UNKNOWN_KEYS = 100, 50, 10, 6, 2, 1
HUGE_HEADER_BYTES = 16 << 20  # per connection, sent until the server closes it
INVALID_ITEMS, VALID_ROWS, UNKNOWN_KEY_COUNT = 1000, 500, 60_000
ATTACKS = "idle,trickle,huge-header,invalid-batch,valid-batch,unknown-keys"
RECONNECT_PAUSE = 0.05  # seconds before an attacking connection that was closed comes back


async def _until_closed(port: int, deadline: float, first: bytes, then: Callable[[int], bytes | None],
                        pause: float) -> None:
    """Connect, send `first`, then `then(i)` every `pause` s until it returns None, the server
    closes, or the deadline; reconnect and repeat until the deadline."""
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(first)
            await writer.drain()
            i = 0
            while time.perf_counter() < deadline and not reader.at_eof():
                chunk = then(i)
                if chunk is None:
                    await asyncio.wait_for(reader.read(1 << 16), max(0.01, deadline - time.perf_counter()))
                    continue
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.perf_counter()))
                i += 1
                await asyncio.sleep(pause)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_PAUSE)  # N slow connections, not a connection flood


async def _post_loop(port: int, deadline: float, request: bytes) -> None:
    while time.perf_counter() < deadline:
        try:
            conn = await Connection.open(port)
            while time.perf_counter() < deadline:
                await asyncio.wait_for(conn.exchange(request), max(0.01, deadline - time.perf_counter()))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await asyncio.sleep(0.01)


async def attack(port: int, seconds: float, valid_features: dict[str, Any], attacks: list[str]) -> None:
    deadline = time.perf_counter() + seconds
    chunk = b"a" * 65536
    invalid = json.dumps({"instances": [{"features": {}}] * INVALID_ITEMS}).encode()
    valid = json.dumps({"instances": [{"features": valid_features}] * VALID_ROWS}).encode()
    unknown = json.dumps({"instances": [{"features": {f"k{i}": 0 for i in range(UNKNOWN_KEY_COUNT)}}]}).encode()
    header = b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
    kinds: dict[str, tuple[int, Callable[[], Any]]] = {
        "idle": (IDLE, lambda: _until_closed(port, deadline, b"", lambda i: None, 0.0)),
        "trickle": (TRICKLE, lambda: _until_closed(port, deadline, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                                   lambda i: b"X", 0.2)),
        "huge-header": (HUGE_HEADER, lambda: _until_closed(
            port, deadline, header, lambda i: chunk if i * len(chunk) < HUGE_HEADER_BYTES else None, 0.0)),
        "invalid-batch": (INVALID_BATCH, lambda: _post_loop(port, deadline, http_request("/predict/batch", invalid))),
        "valid-batch": (VALID_BATCH, lambda: _post_loop(port, deadline, http_request("/predict/batch", valid))),
        "unknown-keys": (UNKNOWN_KEYS, lambda: _post_loop(port, deadline, http_request("/predict/batch", unknown))),
    }
    await asyncio.gather(*(make() for kind in attacks for count, make in [kinds[kind]] for _ in range(count)))


def start_attack(port: int, seconds: float, features: dict[str, Any], attacks: str,
                 env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, os.path.abspath(__file__), "--attack", str(port), "--seconds", str(seconds),
               "--features", json.dumps(features), "--attacks", attacks]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    startup_seconds: float

    def rss_mib(self) -> float:
        """RSS of the server plus the private memory of its child processes (the batch workers).

        Why not the sum of RSS: the workers are forked from the server and share its pages
        copy-on-write; a sum of RSS would count those pages once per process, the memory
        cgroup (a pod's limit) counts them once. So: every page the server has resident, and
        of each worker the pages it shares with nobody (Private_Clean + Private_Dirty)."""
        children = _children(self.process.pid)
        return (_smaps_kib(self.process.pid, ("Rss",))
                + sum(_smaps_kib(pid, ("Private_Clean", "Private_Dirty")) for pid in children)) / 1024.0

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


def _children(pid: int) -> list[int]:
    """Child process ids of `pid` (every thread's), recursively."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _smaps_kib(pid: int, keys: tuple[str, ...]) -> int:
    """The sum of `keys` (e.g. Rss, Private_Dirty) in /proc/<pid>/smaps_rollup, KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            total += int(value.split()[0])
    return total


STARTS = 5  # process starts per server; the start figure is their median


def start_measured(name: str, command: list[str], env: dict[str, str], starts: int = STARTS) -> Server:
    """Start the server `starts` times (each on a fresh port, all but the last stopped again);
    the returned server's `startup_seconds` is the median of the starts.

    Why several: one start is one sample of a figure that varies by +-15% from start to start
    on this machine (the scheduler, the page cache); the median of five is stable to a few
    percent, for both servers alike.
    """
    seconds: list[float] = []
    for attempt in range(starts):
        port = free_port()
        server = start_server(name, command + ["--port", str(port)], port, env)
        seconds.append(server.startup_seconds)
        if attempt < starts - 1:
            server.stop()
    server.startup_seconds = statistics.median(seconds)
    return server


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
        time.sleep(0.002)
    process.kill()
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT} s")


# ---------------------------------------------------------------- the model and the rows


def train_production_candidate(root: Path, which: str) -> tuple[str, str, list[dict[str, Any]]]:
    """bootstrap's steps up to train into `root`; promote `which`; return (version, kind, rows)."""
    from churn.config.settings import load_config
    from churn.features.schema import schema_from_json
    from churn.pipeline.steps import bootstrap_steps, with_root
    from churn.registry.registry import ModelRegistry
    from churn.storage.paths import DataPaths
    from churn.storage.tables import read_parquet

    settings = with_root(load_config(), root)
    for name, run in bootstrap_steps(settings):
        if name == "promote":
            break
        started = time.perf_counter()
        run()
        print(f"  pipeline {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    registry = ModelRegistry(root)
    kind = {"candidate": "hist_gradient_boosting", "baseline": "logistic_regression"}[which]
    version = next(v for v in registry.versions() if registry.card(v)["model_kind"] == kind)
    registry.promote(version, reason=f"api_bench: the {which}", gate=None)
    specs = [s.name for s in schema_from_json(registry.card(version)["feature_schema"])]
    frame = read_parquet(DataPaths.from_root(root).features_file)
    newest = frame[frame["as_of_date"] == frame["as_of_date"].max()].head(512)
    rows = [{name: _json_value(value) for name, value in zip(specs, record)}
            for record in newest[specs].itertuples(index=False, name=None)]
    return version, kind, rows


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------- the run


@dataclass
class Figures:
    image_mb: float
    startup_s: float
    rss_after_load_mib: float = float("nan")
    rss_after_hostile_mib: float = float("nan")
    saturation: LoadResult = field(default_factory=LoadResult)
    cpu_us_per_request: float = float("nan")  # server CPU at saturation: what a shared machine disturbs least
    rate: LoadResult = field(default_factory=LoadResult)
    rate_rps: float = 0.0
    hostile: LoadResult = field(default_factory=LoadResult)
    probes: LoadResult = field(default_factory=LoadResult)
    load: dict[str, float] = field(default_factory=dict)  # load average (1 min) at each phase


def measure(server: Server, image_mb: float, requests: Requests, rate: float, args: argparse.Namespace,
            env: dict[str, str], features: dict[str, Any], is_baseline: bool) -> Figures:
    figures = Figures(image_mb, server.startup_seconds, load={"start": os.getloadavg()[0]})
    asyncio.run(saturate(server.port, requests, 4, 1.0))  # warm-up: first-call costs, caches
    figures.load["saturation"] = os.getloadavg()[0]
    cpu_before = server.cpu_seconds()
    figures.saturation = asyncio.run(saturate(server.port, requests, args.connections, args.seconds))
    served = len(figures.saturation.latencies) + figures.saturation.failures
    figures.cpu_us_per_request = 1e6 * (server.cpu_seconds() - cpu_before) / max(served, 1)
    figures.rate_rps = min(rate, figures.saturation.throughput / 2.0) if is_baseline else rate
    figures.load["rate"] = os.getloadavg()[0]
    figures.rate = asyncio.run(open_loop(server.port, requests, figures.rate_rps, args.seconds, args.connections))
    figures.rss_after_load_mib = server.rss_mib()
    figures.load["hostile"] = os.getloadavg()[0]
    attacker = start_attack(server.port, args.seconds, features, args.attacks, env)
    try:
        time.sleep(0.5)  # let the attack get going first

        async def well_behaved() -> tuple[LoadResult, LoadResult]:
            seconds = args.seconds - 1.0
            return await asyncio.gather(
                open_loop(server.port, requests, args.hostile_rate, seconds, 4, timeout=CLIENT_TIMEOUT),
                probe_ready(server.port, seconds))

        figures.hostile, figures.probes = asyncio.run(well_behaved())
    finally:
        try:
            attacker.wait(args.seconds + 30)
        except subprocess.TimeoutExpired:
            attacker.kill()
            attacker.wait()
    time.sleep(1.0)  # connections the attack left are closed
    figures.rss_after_hostile_mib = server.rss_mib()
    return figures


def image_layout_path(entries: list[str], site: Path) -> str:
    """The import path of the images for `entries` (this process's sys.path): the app's
    directories first, then every wheel's files in ONE site-packages directory, `site`
    (symlinks), as tools/oci lays out /app.

    Why: under `bazel run` each wheel is its own sys.path entry (about 40), so every import
    looks in up to 40 directories before it finds its module; in the image it looks in a few.
    Both servers start from this layout, so the start figure is the image's, not Bazel's.
    """
    app: list[str] = []
    for entry in entries:
        path = Path(entry)
        if path.name != "site-packages":
            app.append(entry)
            continue
        for item in path.iterdir():
            if item.name != "__init__.py":  # made by rules_python, not the wheel's (the images skip it too)
                _merge_into(site / item.name, item)
    return os.pathsep.join([*app, str(site)])


def _merge_into(target: Path, source: Path) -> None:
    """Symlink `source` at `target`; directories two wheels share (namespaces) are merged."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() and not target.is_symlink():
        target.symlink_to(source)
    elif target.is_dir() and source.is_dir():
        if target.is_symlink():  # a second wheel with this directory: make it a real one
            first = target.resolve()
            target.unlink()
            target.mkdir()
            for item in first.iterdir():
                (target / item.name).symlink_to(item)
        for item in source.iterdir():
            _merge_into(target / item.name, item)


def run(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="api_bench.") as tmp, tempfile.TemporaryDirectory(prefix="api_site.") as site:
        root = Path(tmp)
        env = dict(os.environ, PYTHONPATH=image_layout_path(sys.path, Path(site)), **THREAD_CAPS)
        print("training the model with the pipeline (bootstrap's steps) ...", file=sys.stderr)
        version, kind, rows = train_production_candidate(root, args.model)
        requests = Requests([http_request("/predict", json.dumps({"user_id": i, "features": row}).encode())
                             for i, row in enumerate(rows)])
        env["CHURN_DATA_ROOT"] = str(root)
        servers = {
            "churn API": ([sys.executable, "-c", API_MAIN, "--host", "127.0.0.1"], API_IMAGE),
            "baseline": ([sys.executable, "-c", BASELINE_MAIN, "--root", str(root)], BASELINE_IMAGE),
        }
        figures: dict[str, Figures] = {}
        for name, (command, image) in servers.items():
            print(f"measuring {name} ...", file=sys.stderr)
            image_mb = layout_sizes(RUNFILES / image)[1] / 1e6
            server = start_measured(name, command, env)
            try:
                figures[name] = measure(server, image_mb, requests, args.rate, args, env, rows[0], name == "baseline")
            finally:
                server.stop()
    text, all_ok = format_table(figures, args)
    print(f"API bench: the {args.model} model ({kind}, version {version}) trained by the pipeline at the "
          f"default config; one uvicorn worker per server on 127.0.0.1, {THREAD_CAPS['OMP_NUM_THREADS']} OpenMP/BLAS "
          f"thread; python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load generator in this process "
          f"({args.connections} connections, {args.seconds:g} s per phase); load average before "
          f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1 / 5 / 15 min)")
    print(text)
    return 0 if all_ok else 1


Row = tuple[str, Callable[[Figures], str], str, Callable[[Figures, Figures], bool] | None, str]


def rows_for(args: argparse.Namespace) -> list[Row]:
    """(figure, how to print it, target, check of the API against the baseline, phase of the load)."""
    return [
        ("image, unpacked (MB)", lambda f: f"{f.image_mb:.1f}", "< 150", lambda a, b: a.image_mb < 150.0, "start"),
        (f"process start to /ready 200 (s, median of {STARTS})", lambda f: f"{f.startup_s:.2f}", "< 0.5",
         lambda a, b: a.startup_s < 0.5, "start"),
        ("single-row saturation (req/s)", lambda f: f"{f.saturation.throughput:,.0f}", ">= 5,000",
         lambda a, b: a.saturation.throughput >= 5000.0, "saturation"),
        ("saturation vs baseline", lambda f: "", ">= 10x", None, "saturation"),
        ("server CPU per request at saturation (us)", lambda f: f"{f.cpu_us_per_request:,.0f}", "", None, "saturation"),
        ("one core's worth: 1e6 / CPU per request (req/s)", lambda f: f"{1e6 / f.cpu_us_per_request:,.0f}", "", None,
         "saturation"),
        ("open-loop rate (req/s)", lambda f: f"{f.rate_rps:,.0f}", "", None, "rate"),
        ("p50 at that rate (ms)", lambda f: f"{f.rate.percentile_ms(50):.2f}", "", None, "rate"),
        ("p99 at that rate (ms)", lambda f: f"{f.rate.percentile_ms(99):.2f}", "< 2",
         lambda a, b: a.rate.percentile_ms(99) < 2.0, "rate"),
        ("memory after the load phases: RSS + workers' private (MiB)", lambda f: f"{f.rss_after_load_mib:.0f}", "< 100",
         lambda a, b: a.rss_after_load_mib < 100.0, "rate"),
        (f"hostile phase: well-behaved p99 at {args.hostile_rate:g} req/s (ms)",
         lambda f: f"{f.hostile.percentile_ms(99):.2f}", "< 20",
         lambda a, b: a.hostile.percentile_ms(99) < 20.0, "hostile"),
        ("hostile phase: well-behaved failures", lambda f: f"{f.hostile.failures} of {f.hostile.failures + len(f.hostile.latencies)}",
         "0", lambda a, b: a.hostile.failures == 0, "hostile"),
        ("hostile phase: /ready probes failed (2 s timeout)", lambda f: f"{f.probes.failures} of {f.probes.failures + len(f.probes.latencies)}",
         "0", lambda a, b: a.probes.failures == 0, "hostile"),
        ("memory after the hostile phase (MiB)", lambda f: f"{f.rss_after_hostile_mib:.0f}", "< 100",
         lambda a, b: a.rss_after_hostile_mib < 100.0, "hostile"),
        ("failures in the load phases", lambda f: str(f.rate.failures + f.saturation.failures), "0",
         lambda a, b: a.rate.failures + a.saturation.failures == 0, "rate"),
    ]


def format_table(figures: dict[str, Figures], args: argparse.Namespace) -> tuple[str, bool]:
    """The table (API first, baseline second) and whether every target held."""
    api, base = figures["churn API"], figures["baseline"]
    names = list(figures)
    cells = [["figure", *names, "target", "ok", "load 1m (API / baseline)"]]
    all_ok = True
    ratio = api.saturation.throughput / base.saturation.throughput if base.saturation.throughput else float("inf")
    for label, show, target, check, phase in rows_for(args):
        if label == "saturation vs baseline":
            values = [f"{figures[n].saturation.throughput / base.saturation.throughput:.1f}x" for n in names]
            ok: bool | None = ratio >= 10.0
        else:
            values = [show(figures[n]) for n in names]
            ok = None if check is None else check(api, base)
        all_ok = all_ok and ok is not False
        load = f"{api.load[phase]:.1f} / {base.load[phase]:.1f}"
        cells.append([label, *values, target, "" if ok is None else ("yes" if ok else "NO"), load])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines), all_ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("candidate", "baseline"), default="candidate",
                        help="which model the pipeline trained both servers serve (default: the "
                             "gradient-boosting candidate)")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop rate, req/s (baseline: at most half its saturation)")
    parser.add_argument("--hostile-rate", type=float, default=100.0, help="well-behaved clients' rate in the hostile phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load phase")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--attacks", default=ATTACKS,
                        help=f"the hostile clients, comma-separated (default: all of {ATTACKS})")
    parser.add_argument("--attack", type=int, help=argparse.SUPPRESS)  # child process: attack this port
    parser.add_argument("--features", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.attack:
        asyncio.run(attack(args.attack, args.seconds, json.loads(args.features), args.attacks.split(",")))
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
