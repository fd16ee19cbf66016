"""Online API benchmark: publishes a synthetic snapshot of N people into the online store (serving/store.py,
SQLite embedded and a real redis-server on a free loopback port) and load-tests single-profile look-ups
against a real uvicorn process running the API as `cdp serve` does, with the load generators beside it.

    python bench/serve.py --people 1000000 [--baseline bench/_out/serve-baseline]
Writes bench/results/serve-<date>-<people>.json and prints Markdown tables for the README.

What is measured, per backend (and per code version when --baseline names a copy of an older serving/
package: each server then runs once on that code and once on the current code, interleaved):
* publish seconds: `store.publish(snapshot)` of the synthetic snapshot, the store write and swap only. The
  snapshot is built in memory (people with a profile document shaped as serving/publish.py writes it,
  ~4.5 identifiers each, segment members), NOT read from gold tables through the pipeline: a 1M-person
  world through the whole pipeline takes longer than this benchmark may.
* latency at a fixed rate: an open-loop asyncio client (a separate process; plain HTTP/1.1 keep-alive) sends GET
  /v1/profiles/{type}:{value} at --rate requests/s for --seconds, on a schedule that does not wait for
  answers; latency runs from each request's scheduled time, so a stalled server is not hidden
  (coordinated omission). The key has profiles:read only (masked answers, no access-log writes).
* maximum sustained throughput: `wrk` (closed loop, one thread) at several connection counts; the best
  requests/s with no errors.
* a swap during load: the open-loop client runs at --rate while a second as-of date is published over the
  first; every answer must be a 200 of one as-of date or the other.
Server, load generators and the publishing process share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: --baseline code goes first

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
DAY1, DAY2 = "2026-11-30", "2026-12-01"
SEGMENTS = ("high_value", "at_risk", "new_members", "lapsed", "wechat_active")
TARGETS = {"p99_ms_max_at_rate": 5.0, "rate": 1000, "publish_s_max": 60.0, "swap_errors_max": 0}
WRK_CONNECTIONS = (4, 16, 64)  # wrk's connections: the best clean run is the maximum


# --- the synthetic snapshot ---------------------------------------------------------------------------

def _phone(i: int) -> str:
    return f"139{i:08d}"


def _doc(i: int, rng: random.Random, segments: list[dict]) -> dict:
    pid = f"p_{i:012d}"
    tags = {}
    for t in range(37):  # as many tags as conf/tags.yaml computes: longs, doubles, booleans and strings
        kind = t % 4
        tags[f"tag_{t:02d}"] = (rng.randrange(1000) if kind == 0 else round(rng.random() * 5000, 2) if kind == 1
                                else rng.random() < 0.3 if kind == 2 else rng.choice(("gold", "silver", "bronze", "none")))
    ids = [{"type": "device_id", "value": f"D{i:010X}"}, {"type": "email", "value": f"u{i}@example.com"},
           {"type": "phone", "value": "+86" + _phone(i)}]
    if i % 5 < 3:
        ids.append({"type": "member_id", "value": f"m{i}"})
    return {
        "person_id": pid, "as_of": DAY1,
        "profile": {"name": {"value": "张" + "伟芳娜"[i % 3], "source": "crm"},
                    "gender": {"value": "F" if i % 2 else "M", "source": "crm"},
                    "birthday": {"value": f"19{70 + i % 30}-0{1 + i % 9}-1{i % 10}", "source": "crm"},
                    "city": {"value": ("上海", "北京", "杭州", "广州")[i % 4], "source": "orders"},
                    "tier": {"value": ("gold", "silver", "bronze")[i % 3], "source": "crm"},
                    "phone": {"value": "+86" + _phone(i), "source": "crm"},
                    "email": {"value": f"u{i}@example.com", "source": "web"}},
        "age": 26 + i % 30, "first_seen": "2025-03-01", "last_seen": DAY1, "tenure_days": 100 + i % 500,
        "channels": ["app", "web", "wechat"][: 1 + i % 3],
        "tags": tags,
        "scores": {"churn": {"score": round(rng.random(), 4), "decile": rng.randrange(1, 11), "version": "3", "as_of": DAY1},
                   "propensity": {"score": round(rng.random(), 4), "decile": rng.randrange(1, 11), "version": "2", "as_of": DAY1}},
        "segments": segments,
        "identifiers": sorted(ids, key=lambda d: (d["type"], d["value"])),
    }


def synthetic_snapshot(people: int, seed: int = 7):
    """A Snapshot of `people` synthetic people as of DAY1, shaped as serving/publish.py builds it."""
    from serving.store import Snapshot

    rng = random.Random(seed)
    docs, ids, members = [], [], []
    for i in range(people):
        segs = [{"segment": s, "entered_on": "2026-11-2" + str(i % 9)} for k, s in enumerate(SEGMENTS) if (i >> k) % 7 == 0]
        doc = _doc(i, rng, segs)
        pid = doc["person_id"]
        docs.append((pid, json.dumps(doc, ensure_ascii=False)))
        ids.extend((f"{d['type']}:{d['value']}", pid) for d in doc["identifiers"])
        ids.append((f"person_id:{pid}", pid))
        members.extend((s["segment"], pid, s["entered_on"]) for s in segs)
    members.sort()
    return Snapshot(as_of=DAY1, people=docs, ids=ids, members=members, segments=list(SEGMENTS),
                    sources={"synthetic": people})


def next_day(snapshot):
    """The same people as of DAY2 (the document's own as_of too): what a second publish swaps in."""
    from serving.store import Snapshot

    old, new = f'"as_of": "{DAY1}"', f'"as_of": "{DAY2}"'
    return Snapshot(as_of=DAY2, people=[(p, d.replace(old, new, 1)) for p, d in snapshot.people], ids=snapshot.ids,
                    members=snapshot.members, segments=snapshot.segments, sources=snapshot.sources)


def lookup_paths(people: int, count: int, seed: int = 11) -> list[str]:
    """Profile paths by every identifier type, raw phone formats included, for random people."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        i = rng.randrange(people)
        p = _phone(i)
        out.append(rng.choice((f"phone:{p}", f"phone:%2B86-{p[:3]}-{p[3:7]}-{p[7:]}", f"email:U{i}@Example.com",
                               f"device_id:d{i:010x}", f"person_id:p_{i:012d}",
                               f"member_id:m{i - i % 5}")))
    return ["/v1/profiles/" + t for t in out]


# --- processes ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real redis-server (Debian's, scripts/system-deps.sh) on a free loopback port, no persistence."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed: run `make system-deps` (scripts/system-deps.sh)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def start_server(store_url: str, keys: Path, log: Path, code: Path | None) -> tuple[subprocess.Popen, str]:
    """The API on uvicorn in its own process, on the serving/ package under `code` (default: this repo's)."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code)] if code else []) + os.pathsep + str(ROOT)}
    proc = subprocess.Popen([PY, __file__, "_server", store_url, str(keys), str(log), str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the API server exited: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the API server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _server(store_url: str, keys: str, log: str, port: str) -> None:
    import serving.api as api
    from serving.access import AccessLog, KeyRing
    from serving.store import open_store

    app = api.create_app(open_store(store_url), KeyRing(Path(keys)), AccessLog(Path(log)), "CN",
                         segments=[{"name": s, "description": ""} for s in SEGMENTS])
    if hasattr(api, "run_app"):
        api.run_app(app, "127.0.0.1", int(port))
    else:  # an older serving/ (--baseline): what its serve() ran
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="info", access_log=False)


# --- load generators ----------------------------------------------------------------------------------

def _client(url: str, key: str, paths_file: str, rate: str, seconds: str, until: str = "") -> None:
    """Open loop: request k is due at start + k / rate and is sent then on an idle keep-alive connection (a
    new one when all are busy), whether or not earlier ones were answered; for `seconds`, or until the file
    `until` exists. A minimal HTTP/1.1 client on
    asyncio streams (uvloop): httpx costs more CPU per request than the server it measures, on the same cores."""
    import orjson
    import uvloop

    host, port = url.removeprefix("http://").split(":")
    paths = Path(paths_file).read_text().split()
    rate_f, total = float(rate), int(float(rate) * float(seconds))
    heads = [f"GET {p} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n\r\n".encode() for p in paths]

    async def main() -> dict:
        nonlocal total
        idle: list = []
        lat, service, statuses, as_of, errors = [], [], {}, {}, []
        opened = 0

        async def request(k: int) -> tuple[int, bytes]:
            nonlocal opened
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, int(port))
                opened += 1
            writer.write(heads[k % len(heads)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            idle.append((reader, writer))
            return status, body

        async def one(k: int, due: float) -> None:
            sent = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(request(k), 10)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    day = orjson.loads(body)["as_of"]
                    as_of[day] = as_of.get(day, 0) + 1
                elif len(errors) < 5:
                    errors.append(body[:200].decode(errors="replace"))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, AttributeError) as e:
                statuses["exception"] = statuses.get("exception", 0) + 1
                if len(errors) < 5:
                    errors.append(repr(e))
            done = time.perf_counter()
            lat.append(done - due)
            service.append(done - sent)

        for k in range(50):  # warm a connection and the server
            await one(k, time.perf_counter())
        lat.clear(), service.clear(), statuses.clear(), as_of.clear()
        tasks, late = [], 0
        cpu0 = time.process_time()
        start = time.perf_counter() + 0.05  # uvloop's loop.time() counts whole milliseconds
        for k in range(total):
            due = start + k / rate_f
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                late += 1
            if until and k % 500 == 0 and os.path.exists(until):
                total = k
                break
            tasks.append(asyncio.create_task(one(k, due)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        return {"requests": total, "seconds": round(wall, 2), "achieved_rps": round(total / wall, 1),
                "late_sends": late, "connections_opened": opened, "client_cpu_pct": round(100 * cpu / wall, 1),
                "latency_ms": _pcts(lat), "service_ms": _pcts(service),
                "statuses": {str(k): v for k, v in statuses.items()}, "as_of": as_of, "errors": errors}

    uvloop.install()
    print(json.dumps(asyncio.run(main())))


def _pcts(xs: list[float]) -> dict:
    xs = sorted(xs)
    at = lambda q: round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2)  # noqa: E731
    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999), "max": round(1000 * xs[-1], 2)}


def open_loop(url: str, key: str, paths_file: Path, rate: int, seconds: float, until: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, __file__, "_client", url, key, str(paths_file), str(rate), str(seconds), str(until or "")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the load client failed: {err}")
    return json.loads(out.strip().splitlines()[-1])


_WRK_LUA = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY")
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def wrk(url: str, key: str, paths_file: Path, connections: int, seconds: int, script: Path) -> dict:
    """wrk, closed loop (each connection sends its next request when answered), one thread."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed: run `make system-deps` (scripts/system-deps.sh)")
    out = subprocess.run([exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         env={**os.environ, "BENCH_PATHS": str(paths_file), "BENCH_KEY": key},
                         capture_output=True, text=True, check=True).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", text)
        return round(float(m.group(1)) * unit[m.group(2)], 2)

    pcts = {f"p{q}": ms(v) for q, v in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"connections": connections, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)), "latency_ms": pcts,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


# --- the run ------------------------------------------------------------------------------------------

def bench_backend(kind: str, store_url: str, snapshot, later, codes: dict[str, Path | None], work: Path,
                  paths_file: Path, key: str, args) -> dict:
    from serving.store import open_store

    store = open_store(store_url)
    t0 = time.perf_counter()
    meta = store.publish(snapshot)
    publish_s = time.perf_counter() - t0
    print(f"[{kind}] published {meta['people']:,} people, {meta['identifiers']:,} identifiers in {publish_s:.1f} s", flush=True)
    result = {"store": store_url, "publish_s": round(publish_s, 2), "people": meta["people"],
              "identifiers": meta["identifiers"], "versions": {}}
    script = work / "lookups.lua"
    script.write_text(_WRK_LUA)
    snapshots = [later, snapshot]  # each swap publishes the other day
    for _ in range(args.repeat):
        for name, code in codes.items():
            proc, url = start_server(store_url, work / "keys.json", work / "access.log", code)
            try:
                runs = result["versions"].setdefault(name, {"fixed_rate": [], "wrk": [], "swap": []})
                print(f"[{kind}/{name}] wrk, then open loop at {args.rate}/s for {args.seconds} s", flush=True)
                for c in WRK_CONNECTIONS:  # first: they also warm the server and the page cache
                    runs["wrk"].append(wrk(url, key, paths_file, c, args.wrk_seconds, script))
                    print(f"  wrk -c{c}: {runs['wrk'][-1]}", flush=True)
                load_before = [round(x, 2) for x in os.getloadavg()]  # a shared machine: others' work shows here
                runs["fixed_rate"].append({**finish(open_loop(url, key, paths_file, args.rate, args.seconds)),
                                           "loadavg_before": load_before})
                print(f"  {runs['fixed_rate'][-1]['latency_ms']}", flush=True)
                if args.swap:
                    # The load runs from 3 s before the publish until 3 s after its swap, however long it takes.
                    stop_file = work / "swapped"
                    stop_file.unlink(missing_ok=True)
                    client = open_loop(url, key, paths_file, args.rate, 3600, stop_file)
                    time.sleep(3)
                    t0 = time.perf_counter()
                    swapped = store.publish(snapshots[0])
                    swap_s = time.perf_counter() - t0
                    snapshots.reverse()
                    time.sleep(3)
                    stop_file.touch()
                    load = finish(client)
                    errors = sum(v for k, v in load["statuses"].items() if k != "200")
                    runs["swap"].append({**load, "publish_s": round(swap_s, 2), "to": swapped["as_of"], "failed": errors})
                    print(f"  swap to {swapped['as_of']} in {swap_s:.1f} s under load: {errors} errors, "
                          f"as_of seen {load['as_of']}, latency {load['latency_ms']}", flush=True)
            finally:
                stop(proc)
    store.close()
    return result


def summary(results: dict) -> dict:
    out = {}
    for kind, r in results["backends"].items():
        for name, v in r["versions"].items():
            fr = min(v["fixed_rate"], key=lambda x: x["latency_ms"]["p99"])  # the median would need more rounds
            clean = [w for w in v["wrk"] if w["non_2xx"] == 0 and w["socket_errors"] == 0]
            best = max(clean, key=lambda w: w["rps"]) if clean else None
            swap_errors = sum(s["failed"] for s in v["swap"]) if v["swap"] else None
            out[f"{kind}/{name}"] = {
                "publish_s": r["publish_s"], "p50_ms": fr["latency_ms"]["p50"], "p99_ms": fr["latency_ms"]["p99"],
                "achieved_rps": fr["achieved_rps"], "max_rps": best and best["rps"],
                "max_rps_connections": best and best["connections"], "swap_errors": swap_errors,
                "swap_publish_s": [s["publish_s"] for s in v["swap"]],
                "swap_p99_ms": [s["latency_ms"]["p99"] for s in v["swap"]],
                "targets": {"p99_at_rate": fr["latency_ms"]["p99"] <= TARGETS["p99_ms_max_at_rate"],
                            "publish": r["publish_s"] <= TARGETS["publish_s_max"] if results["people"] >= 1_000_000 else None,
                            "swap_errors": swap_errors == 0 if swap_errors is not None else None}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=1_000_000)
    ap.add_argument("--backends", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    ap.add_argument("--rate", type=int, default=TARGETS["rate"], help="open-loop requests/s")
    ap.add_argument("--seconds", type=float, default=15, help="of each open-loop run")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (every code version) per backend")
    ap.add_argument("--no-swap", dest="swap", action="store_false")
    ap.add_argument("--baseline", type=Path, help="a folder holding an older serving/ package to measure beside this one")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from identity import _scale_name, machine

    from serving.access import add_key

    work = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=HERE / "_out" if (HERE / "_out").exists() else None))
    key = add_key(work / "keys.json", "bench", ["profiles:read"])
    paths_file = work / "paths.txt"
    paths_file.write_text("\n".join(lookup_paths(args.people, 20_000)) + "\n")
    t0 = time.perf_counter()
    snapshot = synthetic_snapshot(args.people)
    later = next_day(snapshot) if args.swap else None
    built_s = time.perf_counter() - t0
    print(f"built a synthetic snapshot of {args.people:,} people in {built_s:.1f} s", flush=True)
    codes: dict[str, Path | None] = {}
    if args.baseline:
        codes["baseline"] = args.baseline.resolve()
    codes["current"] = None
    results = {"machine": machine(), "people": args.people, "kind": "synthetic snapshot published through "
               "serving/store.py (not a pipeline-built world)", "rate": args.rate, "seconds": args.seconds,
               "wrk_seconds": args.wrk_seconds, "wrk_connections": WRK_CONNECTIONS, "targets": TARGETS,
               "snapshot_build_s": round(built_s, 1),
               "doc_bytes_mean": round(sum(len(d.encode()) for _, d in snapshot.people[:10000]) / min(10000, args.people)),
               "code_versions": {k: str(v) if v else "this repo" for k, v in codes.items()}, "backends": {}}
    redis_proc = None
    try:
        for kind in args.backends:
            if kind == "sqlite":
                url = f"sqlite://{work / 'online.sqlite'}"
            else:
                redis_proc, url = start_redis(work)
            results["backends"][kind] = bench_backend(kind, url, snapshot, later, codes, work, paths_file, key, args)
            if redis_proc:
                stop(redis_proc)
                redis_proc = None
    finally:
        if redis_proc:
            stop(redis_proc)
    results["summary"] = summary(results)
    out = args.out or HERE / "results" / f"serve-{results['machine']['date']}-{_scale_name(args.people)}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}\n")
    print(f"| backend / code | publish s | p50 ms at {args.rate}/s | p99 ms | max req/s (wrk) | swap errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in results["summary"].items():
        print(f"| {name} | {s['publish_s']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_rps']} (c={s['max_rps_connections']}) "
              f"| {s['swap_errors']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        _server(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "_client":
        _client(*sys.argv[2:8])
    else:
        main()
