"""File transfer and picture benchmark: file_server and msfs next to bare baselines.

    python benchmarks/files.py [--runs N] [--rounds K] [--size MiB] [--pictures P]
        [--picture-size KiB] [--quick] [--out FILE] [--json FILE] [--keep] [--timeout S]

Each run starts a fresh LocalCluster (route, db_proxy, login_server, msg-1,
msg-2, file_server, msfs; SQLite; free ports on 127.0.0.1) and two baseline
processes (benchmarks/file_baselines.py), then measures, each server taking
turns with its baseline K times (ABBA), so a noisy moment hits both alike:

* **online**: a sender on msg-1 sends a random file (64 MiB) to a receiver on
  msg-2 (IMFileReq, IMFileRsp, IMFileNotify, both log in to the file server,
  PEER_READY); the receiver pulls it in 32 KiB chunks, one outstanding, as
  TeamTalk clients do. **Baseline**: the same clients and frames through
  ``relay``, a plain asyncio process that copies bytes between two sockets
  (no parsing, no checks): the ratio is what file_server's checks, protobuf
  decoding and re-encoding cost.
* **offline**: the same file uploaded (the file server pulls it into the
  store), announced (IMFileAddOfflineReq), downloaded by the receiver with its
  own ticket, then deleted.
* **msfs**: P pictures (200 of 200 KiB) posted one after the other as
  TeamTalk's Android client posts them (tests/msfs/clients.py), then each
  downloaded. **Baseline**: ``http``, a bare aiohttp server that streams the
  POST body to a file (fsync and rename, as msfs's store commits) and serves
  it back with FileResponse.
* **CPU** of each server process over its transfers (all threads, from
  schedstat), and **RSS**: VmRSS before, VmHWM (the peak) after the run.

Every transfer is checked by SHA-256 against what was sent; a wrong byte ends
the benchmark with exit status 1. The table shows medians over the runs (per-run
values in brackets) and ratios to the baselines; the output also goes to
``benchmarks/results/files-<date>.txt`` (not for ``--quick`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.file_baselines import Baseline, peak_rss  # noqa: E402
from benchmarks.file_peers import FRAME_TIMEOUT, KiB, MiB, WrongBytes, open_peer, verify  # noqa: E402
from benchmarks.measure import median, percentile  # noqa: E402
from benchmarks.servers import create_users  # noqa: E402
from benchmarks.settings import HOST  # noqa: E402
from common.commands import Cmd  # noqa: E402
from common.pb import base_pb2, file_pb2  # noqa: E402
from imctl.cluster import LocalCluster  # noqa: E402

WARM_UP = 4 * MiB  # an unmeasured transfer on each path first
WARM_UP_PICTURES = 5  # and unmeasured uploads
SENDER, RECEIVER = "fsend", "frecv"
ONLINE = base_pb2.FILE_TYPE_ONLINE
OFFLINE = base_pb2.FILE_TYPE_OFFLINE
DONE = base_pb2.CLIENT_FILE_DONE


class OutOfTime(Exception):
    """The whole benchmark ran past ``--timeout`` (checked between runs)."""


@dataclass
class Options:
    runs: int = 3
    rounds: int = 5
    size: int = 64 * MiB
    pictures: int = 200
    picture_size: int = 200 * KiB
    timeout: float = 900.0
    out: Path | None = None
    json_path: Path | None = None
    keep: bool = False
    quick: bool = False


def cpu_time(pid: int) -> float:
    """CPU seconds of every thread of a process, to the nanosecond (``/proc/<pid>/task/*/schedstat``;
    ``/proc/<pid>/stat`` counts 10 ms ticks, too coarse for a relay busy 20 ms per file)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


# -- the IM side (gateways) ------------------------------------------------------------


async def ask(client: Any, to: int, size: int, mode: base_pb2.TransferFileType.ValueType) -> Any:
    req = file_pb2.IMFileReq(
        from_user_id=0, to_user_id=to, file_name="bench.bin", file_size=size, trans_mode=mode
    )
    command, rsp = await client.request(Cmd.FILE_REQ, req, FRAME_TIMEOUT)
    if command != Cmd.FILE_RES or rsp.result_code != 0 or not rsp.ip_addr_list:
        raise RuntimeError(f"IMFileReq refused: {rsp}")
    return rsp


def mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds if seconds > 0 else float("nan")


async def online(
    sender: Any, receiver: Any, data: bytes, buffer: bytearray, expected: str, file_pid: int
) -> dict[str, float]:
    rsp = await ask(sender, receiver.user_id, len(data), ONLINE)
    notify = await receiver.next_push(Cmd.FILE_NOTIFY, FRAME_TIMEOUT)
    addr = rsp.ip_addr_list[0]
    out = await open_peer(sender.user_id, addr.ip, addr.port)
    into = await open_peer(receiver.user_id, notify.ip_addr_list[0].ip, notify.ip_addr_list[0].port)
    try:
        out.serve = data
        await out.login(rsp.task_id, base_pb2.CLIENT_REALTIME_SENDER)
        await into.login(notify.task_id, base_pb2.CLIENT_REALTIME_RECVER)
        if await into.state() != base_pb2.CLIENT_FILE_PEER_READY:
            raise RuntimeError("no PEER_READY")
        cpu_before, client_before = cpu_time(file_pid), time.process_time()
        seconds = await into.pull(buffer, ONLINE)
        cpu = cpu_time(file_pid) - cpu_before
        client = time.process_time() - client_before
        into.tell(DONE)
        if await out.state() != DONE:
            raise RuntimeError("the sender did not hear DONE")
    finally:
        out.close()
        into.close()
    verify("online transfer", buffer, expected)
    return {
        "online_mbps": mbps(len(data), seconds),
        "online_server_cpu_pct": 100 * cpu / seconds,
        "online_server_cpu_ms_per_mib": 1000 * cpu / (len(data) / MiB),
        "online_client_cpu_pct": 100 * client / seconds,
    }


async def offline(
    sender: Any, receiver: Any, data: bytes, buffer: bytearray, expected: str
) -> dict[str, float]:
    rsp = await ask(sender, receiver.user_id, len(data), OFFLINE)
    addr = rsp.ip_addr_list[0]
    up = await open_peer(sender.user_id, addr.ip, addr.port)
    try:
        up.serve = data
        started = time.perf_counter()
        await up.login(rsp.task_id, base_pb2.CLIENT_OFFLINE_UPLOAD)
        if await up.state() != DONE:  # sent after the commit (fsync, rename)
            raise RuntimeError("upload did not end with DONE")
        upload = time.perf_counter() - started
        if up.served != len(data):
            raise WrongBytes(f"the file server pulled {up.served} bytes of {len(data)}")
    finally:
        up.close()
    add = file_pb2.IMFileAddOfflineReq(
        from_user_id=0,
        to_user_id=receiver.user_id,
        task_id=rsp.task_id,
        file_name="bench.bin",
        file_size=len(data),
    )
    sender.send(Cmd.FILE_ADD_OFFLINE_REQ, add)
    notify = await receiver.next_push(Cmd.FILE_NOTIFY, FRAME_TIMEOUT)
    if notify.offline_ready != 1:
        raise RuntimeError(f"expected an offline-ready notify: {notify}")
    down = await open_peer(receiver.user_id, notify.ip_addr_list[0].ip, notify.ip_addr_list[0].port)
    try:
        await down.login(notify.task_id, base_pb2.CLIENT_OFFLINE_DOWNLOAD)
        download = await down.pull(buffer, OFFLINE)
        if await down.state() != DONE:
            raise RuntimeError("download did not end with DONE")
    finally:
        down.close()
    verify("offline download", buffer, expected)
    receiver.send(
        Cmd.FILE_DEL_OFFLINE_REQ,
        file_pb2.IMFileDelOfflineReq(from_user_id=0, to_user_id=receiver.user_id, task_id=notify.task_id),
    )
    return {
        "offline_upload_mbps": mbps(len(data), upload),
        "offline_download_mbps": mbps(len(data), download),
    }


async def relayed(
    port: int, relay_pid: int, data: bytes, buffer: bytearray, expected: str
) -> dict[str, float]:
    """The online pull pattern through the relay: same clients, same frames, nothing checks them."""
    out = await open_peer(1, HOST, port, b"S")
    into = await open_peer(2, HOST, port, b"R")
    try:
        out.ticket, into.ticket, out.serve = "sender-ticket", "receiver-ticket", data
        cpu_before, client_before = cpu_time(relay_pid), time.process_time()
        seconds = await into.pull(buffer, ONLINE)
        cpu = cpu_time(relay_pid) - cpu_before
        client = time.process_time() - client_before
    finally:
        out.close()
        into.close()
    verify("relayed transfer", buffer, expected)
    return {
        "online_mbps": mbps(len(data), seconds),
        "online_server_cpu_pct": 100 * cpu / seconds,
        "online_server_cpu_ms_per_mib": 1000 * cpu / (len(data) / MiB),
        "online_client_cpu_pct": 100 * client / seconds,
    }


async def im_clients(cluster: LocalCluster) -> tuple[Any, Any]:
    from tests.support.ttclient import TTClient

    pair = []
    for name, gateway in ((SENDER, "msg-1"), (RECEIVER, "msg-2")):
        client = TTClient()
        await client.connect(HOST, int(str(cluster.by_name(gateway).info["port"])))
        pair.append(client)
        res = await client.login(name, "bench-password")
        if res.result_code != 0:
            raise RuntimeError(f"login of {name} refused: {res.result_code}")
    return pair[0], pair[1]


# -- pictures --------------------------------------------------------------------------


@dataclass
class Tally:
    """What the picture batches of one server add up to."""

    size: int = 0
    upload: float = 0.0
    download: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        latencies = sorted(self.latencies)
        return {
            "upload_mbps": mbps(self.size, self.upload),
            "download_mbps": mbps(self.size, self.download),
            "upload_p50_ms": 1000 * percentile(latencies, 50),
            "upload_p99_ms": 1000 * percentile(latencies, 99),
            "upload_cpu_ms": 1000 * self.cpu / max(1, len(latencies)),
        }


async def pictures(base_url: str, pid: int, pictures: Sequence[bytes], bare: bool, tally: Tally) -> None:
    """Each picture posted as Android posts it, one at a time, then each downloaded.

    msfs stores the picture (it drops Android's trailing CRLF from a JPEG); the bare
    server stores the whole body: each download is checked against what that server keeps.
    """
    import aiohttp

    from tests.msfs.clients import android

    latencies: list[float] = []
    urls: list[str] = []
    kept: list[str] = []
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=FRAME_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started, cpu_before = time.perf_counter(), cpu_time(pid)
        for picture in pictures:
            request = android(picture)
            sent = time.perf_counter()
            async with session.post(
                base_url.rstrip("/") + request.target, data=request.body, headers=request.headers
            ) as response:
                reply = json.loads(await response.read())
            latencies.append(time.perf_counter() - sent)
            if response.status != 200 or reply.get("error_code") != 0 or not reply.get("url"):
                raise RuntimeError(f"upload refused: HTTP {response.status} {reply}")
            urls.append(reply["url"])
            kept.append(hashlib.sha256(request.body if bare else picture).hexdigest())
        upload, cpu = time.perf_counter() - started, cpu_time(pid) - cpu_before
        started = time.perf_counter()
        for url, expected in zip(urls, kept, strict=True):
            async with session.get(url) as response:
                body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status}")
            verify(f"picture {url}", body, expected)
        download = time.perf_counter() - started
    tally.size += sum(len(p) for p in pictures)
    tally.upload += upload
    tally.download += download
    tally.cpu += cpu
    tally.latencies += latencies


def make_pictures(opts: Options) -> list[bytes]:
    from tests.msfs.clients import jpeg

    return [jpeg(opts.picture_size, seed=i) for i in range(opts.pictures)]


# -- one run ---------------------------------------------------------------------------


def pid_of(cluster: LocalCluster, name: str) -> int:
    process = cluster.by_name(name).process
    assert process is not None
    return process.pid


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([r[key] for r in results]) for key in results[0]}


async def measure(
    opts: Options, cluster: LocalCluster, relay: Baseline, http: Baseline, data: bytes, pics: list[bytes]
) -> dict[str, dict[str, float]]:
    """One run's figures. Each server and its baseline take turns (ABBA...), ``opts.rounds``
    times, so a noisy moment of the shared box hits both alike."""
    expected = hashlib.sha256(data).hexdigest()
    file_pid, msfs_pid = pid_of(cluster, "file-1"), pid_of(cluster, "msfs-1")
    assert relay.process is not None and http.process is not None
    relay_pid, http_pid = relay.process.pid, http.process.pid
    pids = {"file_server": file_pid, "msfs": msfs_pid, "relay": relay_pid, "bare_http": http_pid}
    rss_start = {name: peak_rss(pid, "VmRSS") for name, pid in pids.items()}
    buffer = bytearray(len(data))  # every transfer lands here (reused: touched memory)
    warm = data[:WARM_UP]
    warm_buffer, warm_sum = bytearray(len(warm)), hashlib.sha256(warm).hexdigest()
    transfers: dict[str, list[dict[str, float]]] = {"relay": [], "file_server": [], "offline": []}
    sender, receiver = await im_clients(cluster)
    try:
        # Warm-up (checked, not measured): first connections, first allocations, both paths.
        await relayed(relay.port, relay_pid, warm, warm_buffer, warm_sum)
        await online(sender, receiver, warm, warm_buffer, warm_sum, file_pid)
        for turn in range(opts.rounds):
            for path in ("relay", "file_server") if turn % 2 == 0 else ("file_server", "relay"):
                if path == "relay":
                    transfers[path].append(await relayed(relay.port, relay_pid, data, buffer, expected))
                else:
                    transfers[path].append(await online(sender, receiver, data, buffer, expected, file_pid))
            transfers["offline"].append(await offline(sender, receiver, data, buffer, expected))
    finally:
        await sender.close()
        await receiver.close()
    msfs_url = f"http://{HOST}:{cluster.by_name('msfs-1').info['port']}/"
    servers = {"bare_http": (f"http://{HOST}:{http.port}/", http_pid), "msfs": (msfs_url, msfs_pid)}
    tallies = {name: Tally() for name in servers}
    for name, (url, pid) in servers.items():  # warm-up, checked, not counted
        await pictures(url, pid, pics[:WARM_UP_PICTURES], name == "bare_http", Tally())
    batch = -(-len(pics) // opts.rounds)
    for turn in range(opts.rounds):
        for name in ("bare_http", "msfs") if turn % 2 == 0 else ("msfs", "bare_http"):
            url, pid = servers[name]
            await pictures(
                url, pid, pics[turn * batch : (turn + 1) * batch], name == "bare_http", tallies[name]
            )
    result = {
        "relay": medians(transfers["relay"]),
        "file_server": {**medians(transfers["file_server"]), **medians(transfers["offline"])},
        **{name: tally.figures() for name, tally in tallies.items()},
    }
    for name, pid in pids.items():
        result[name]["rss_start_mib"] = rss_start[name]
        result[name]["peak_rss_mib"] = peak_rss(pid)
    return result


def one_run(opts: Options, run_dir: Path, data: bytes, pics: list[bytes]) -> dict[str, dict[str, float]]:
    run_dir.mkdir(parents=True)
    db_url = f"sqlite:///{run_dir / 'im.db'}"
    uvloop.run(create_users(db_url, [SENDER, RECEIVER]))
    cluster = LocalCluster(
        run_dir,
        None,
        gateways=2,
        base_port=0,
        database_url=db_url,
        files=True,
        # One client address posts every picture: no rate limit for the benchmark.
        extra={"msfs": {"uploads_per_minute": "1000000"}},
    )
    relay, http = Baseline("relay", run_dir), Baseline("http", run_dir)
    try:
        cluster.start()
        relay.start()
        http.start()
        result = uvloop.run(measure(opts, cluster, relay, http, data, pics))
        dead = [s.name for s in cluster.dead()]
        if dead:
            raise RuntimeError(f"server(s) died during the run: {', '.join(dead)}")
        return result
    finally:
        relay.stop()
        http.stop()
        cluster.stop()


# -- the report ------------------------------------------------------------------------

ROWS = (
    # (title, server, figure, baseline, format)
    ("online transfer MB/s (32 KiB pulls, 1 outstanding)", "file_server", "online_mbps", "relay", "{:.1f}"),
    ("  server CPU % during it (100 = a core)", "file_server", "online_server_cpu_pct", "relay", "{:.0f}"),
    ("  server CPU ms per MiB", "file_server", "online_server_cpu_ms_per_mib", "relay", "{:.2f}"),
    ("  client CPU % during it (both peers)", "file_server", "online_client_cpu_pct", "relay", "{:.0f}"),
    ("offline upload MB/s", "file_server", "offline_upload_mbps", "", "{:.1f}"),
    ("offline download MB/s", "file_server", "offline_download_mbps", "", "{:.1f}"),
    ("file_server RSS MiB before the transfers", "file_server", "rss_start_mib", "relay", "{:.1f}"),
    ("file_server peak RSS MiB (VmHWM)", "file_server", "peak_rss_mib", "relay", "{:.1f}"),
    ("msfs upload MB/s", "msfs", "upload_mbps", "bare_http", "{:.1f}"),
    ("msfs upload latency p50 ms", "msfs", "upload_p50_ms", "bare_http", "{:.2f}"),
    ("msfs upload latency p99 ms", "msfs", "upload_p99_ms", "bare_http", "{:.2f}"),
    ("  server CPU ms per upload", "msfs", "upload_cpu_ms", "bare_http", "{:.2f}"),
    ("msfs download MB/s", "msfs", "download_mbps", "bare_http", "{:.1f}"),
    ("msfs RSS MiB before the uploads", "msfs", "rss_start_mib", "bare_http", "{:.1f}"),
    ("msfs peak RSS MiB (VmHWM)", "msfs", "peak_rss_mib", "bare_http", "{:.1f}"),
)


def summarize(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: median([r[name][key] for r in runs]) for key in runs[0][name]} for name in runs[0]}


def report(
    opts: Options, runs: list[dict[str, dict[str, float]]], summary: dict[str, dict[str, float]]
) -> str:
    def cell(name: str, key: str, fmt: str) -> str:
        if not name:
            return "-"
        values = ", ".join(fmt.format(r[name][key]) for r in runs)
        many = f" [{values}]" if len(runs) > 1 else ""
        return fmt.format(summary[name][key]) + many

    rows = [["figure", "server", "baseline", "ratio"]]
    for title, name, key, base, fmt in ROWS:
        ratio = summary[name][key] / summary[base][key] if base and summary[base][key] else float("nan")
        rows.append(
            [title, cell(name, key, fmt), cell(base, key, fmt), "-" if ratio != ratio else f"{ratio:.2f}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"file {opts.size / MiB:g} MiB, {opts.pictures} pictures of {opts.picture_size / KiB:g} KiB "
        f"(Android request), SQLite; medians of {opts.runs} run(s) (each run: the median of {opts.rounds} "
        "alternating turns of server and baseline), per-run values in brackets",
        "baselines: online = a byte-copying asyncio relay (same clients and frames); "
        "msfs = a bare aiohttp server streaming the body to disk (fsync, rename)",
        "",
        *(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ),
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--runs", type=int, default=3, help="runs, each on a fresh cluster; medians shown (default 3)"
    )
    p.add_argument("--size", type=float, default=64, help="file size in MiB (default 64)")
    p.add_argument(
        "--rounds", type=int, default=5, help="turns of each server and its baseline per run (default 5)"
    )
    p.add_argument("--pictures", type=int, default=200, help="pictures per run (default 200)")
    p.add_argument("--picture-size", type=float, default=200, help="picture size in KiB (default 200)")
    p.add_argument("--quick", action="store_true", help="a 2 MiB file, 10 pictures, one run")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="limit for the whole benchmark (default 900 s)"
    )
    p.add_argument(
        "--out", type=Path, help="write the report here (default benchmarks/results/files-<date>.txt)"
    )
    p.add_argument("--json", type=Path, dest="json_path", help="also write every figure as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    a = p.parse_args(argv)
    o = Options(
        runs=a.runs,
        rounds=a.rounds,
        size=round(a.size * MiB),
        pictures=a.pictures,
        picture_size=round(a.picture_size * KiB),
        timeout=a.timeout,
        out=a.out,
        json_path=a.json_path,
        keep=a.keep,
        quick=a.quick,
    )
    if a.quick:
        o.size, o.pictures, o.runs, o.rounds = 2 * MiB, 10, 1, 2
    if o.runs < 1 or o.rounds < 1 or o.size < 1 or o.pictures < 1 or o.picture_size < 16:
        p.error("--runs, --rounds, --size, --pictures must be positive, --picture-size at least 16 bytes")
    if o.out is None and not a.quick:
        o.out = ROOT / "benchmarks" / "results" / f"files-{datetime.date.today().isoformat()}.txt"
    return o


def run(opts: Options) -> list[dict[str, dict[str, float]]]:
    deadline = time.monotonic() + opts.timeout
    work = Path(tempfile.mkdtemp(prefix="imbench-files-"))
    os.chdir(work)  # `python -m imctl` puts the working directory first on the servers' path
    data = os.urandom(opts.size)
    pics = make_pictures(opts)
    runs = []
    try:
        for i in range(opts.runs):
            if time.monotonic() > deadline:
                raise OutOfTime
            print(f"  .. run {i + 1}/{opts.runs}", file=sys.stderr, flush=True)
            runs.append(one_run(opts, work / f"run{i + 1}", data, pics))
    except BaseException:
        opts.keep = True
        raise
    finally:
        os.chdir(ROOT)
        if opts.keep:
            print(f"run directory (server logs) kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()

    try:
        runs = run(opts)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except OutOfTime:
        print(f"benchmark exceeded its {opts.timeout:.0f} s limit; servers stopped", file=sys.stderr)
        return 2
    except WrongBytes as e:
        print(f"WRONG BYTES: {e}", file=sys.stderr)
        return 1
    summary = summarize(runs)
    text = report(opts, runs, summary)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    text += f"\n(total {time.monotonic() - started:.1f} s, {now})"
    print(text)
    if opts.out is not None:
        command = "python benchmarks/files.py " + " ".join(args)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(f"$ {command.strip()}\n\n{text}\n")
    if opts.json_path is not None:
        document = {"options": {k: str(v) for k, v in vars(opts).items()}, "runs": runs, "summary": summary}
        opts.json_path.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
