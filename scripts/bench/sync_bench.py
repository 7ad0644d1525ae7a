#!/usr/bin/env python3
"""Helper for scripts/bench/sync.sh: Syncthing config, readiness waits, the measurements, the table.

Not meant to be run by hand; sync.sh owns the processes, mounts, nft table and temp dirs (and
cleans them up), this file only configures, waits, measures and reports. Subcommands:

  free-ports N                          N ports free for both TCP and UDP on 127.0.0.1
  gen-data FILE MIB                     FILE of MIB MiB of random data
  st-config HOME ...                    loopback-only config.xml for one Syncthing instance
  st-wait ...                           until two Syncthing instances are connected and idle
  fy-wait ...                           until two fybrk daemons see each other connected
  measure ...                           the four measurements for one pair; writes a JSON file
  report OUT.json RESULT.json...        the table (and OUT.json)
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

MIB = 1 << 20
FOLDER_ID = "fybrk-bench"


def log(msg):
    print(f"    {msg}", flush=True)


class Timeout(Exception):
    pass


# --- small utilities ----------------------------------------------------------------------------

def free_ports(n):
    """n distinct ports that are free on 127.0.0.1 for TCP and UDP alike (QUIC + TCP listeners)."""
    ports, held = [], []
    while len(ports) < n:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            u.close()
            continue
        held += [t, u]
        ports.append(port)
    for s in held:
        s.close()
    return ports


def gen_data(path, mib):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def chunk_digests(path):
    """sha256 of every 1 MiB chunk of path, and of the whole file."""
    out, whole = [], hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MIB)
            if not b:
                break
            out.append(hashlib.sha256(b).digest())
            whole.update(b)
    return out, whole.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def wait_verified(path, digests, size, timeout, poll=0.005):
    """Block until path holds exactly the content described by digests (1 MiB chunks) and size.

    Incremental: each 1 MiB chunk is compared (sha256) as soon as it is readable with the right
    content; a chunk that is short or different is retried after `poll` seconds (reopening the
    file: a syncer may replace it by a rename). Returns the perf_counter() time of success.
    """
    deadline = time.perf_counter() + timeout
    ok = 0  # chunks verified
    fd = None
    try:
        while True:
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except (FileNotFoundError, PermissionError):
                    fd = None
            progressed = False
            if fd is not None:
                while ok < len(digests):
                    want = min(MIB, size - ok * MIB)
                    try:
                        b = os.pread(fd, want, ok * MIB)
                    except OSError:
                        b = b""
                    if len(b) != want or hashlib.sha256(b).digest() != digests[ok]:
                        break
                    ok += 1
                    progressed = True
                if ok == len(digests):
                    if os.fstat(fd).st_size == size:
                        return time.perf_counter()
            if time.perf_counter() > deadline:
                raise Timeout(f"{path}: {ok} of {len(digests)} MiB verified after {timeout:.0f} s")
            if not progressed:
                if fd is not None:
                    os.close(fd)
                    fd = None
                time.sleep(poll)
    finally:
        if fd is not None:
            os.close(fd)


def proc_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def cpu_s(pid):
    """CPU seconds (user + system, all threads) the process has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def nft_counter(table, name):
    out = subprocess.run(["nft", "-j", "list", "counter", "inet", table, name],
                         check=True, capture_output=True, text=True).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return item["counter"]["bytes"]
    raise RuntimeError(f"nft counter {name} not found")


def udp_snmp():
    """The kernel's UDP counters (this network namespace), e.g. RcvbufErrors: datagrams dropped
    because a socket's receive buffer was full."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def udp_drops(before, after):
    return {k: after[k] - before[k] for k in ("RcvbufErrors", "InErrors") if after[k] != before[k]}


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(1, -(-len(s) * p // 100))  # ceil(len * p / 100)
    return s[int(k) - 1]


# --- Syncthing ----------------------------------------------------------------------------------

def st_config(a):
    """Rewrite a freshly generated config.xml: loopback only, nothing phoning home, one folder
    shared with one peer reached at explicit tcp:// and quic:// loopback addresses."""
    path = os.path.join(a.home, "config.xml")
    tree = ET.parse(path)
    root = tree.getroot()
    me = root.find("device")
    me.set("name", a.name)
    me.find("address").text = "dynamic"

    opts = root.find("options")
    for el in opts.findall("listenAddress"):
        opts.remove(el)

    def setopt(key, value):
        el = opts.find(key)
        if el is None:
            el = ET.SubElement(opts, key)
        el.text = str(value)

    # Listen addresses first in <options> (order does not matter to Syncthing, but keep it tidy).
    for i, url in enumerate([f"tcp://127.0.0.1:{a.port}", f"quic://127.0.0.1:{a.port}"]):
        el = ET.Element("listenAddress")
        el.text = url
        opts.insert(i, el)
    setopt("globalAnnounceEnabled", "false")
    setopt("localAnnounceEnabled", "false")
    setopt("relaysEnabled", "false")
    setopt("natEnabled", "false")
    setopt("startBrowser", "false")
    setopt("urAccepted", "-1")  # usage reporting: declined
    setopt("urSeen", "3")
    setopt("autoUpgradeIntervalH", "0")
    setopt("crashReportingEnabled", "false")
    setopt("stunKeepaliveStartS", "0")  # 0 disables STUN
    setopt("stunKeepaliveMinS", "0")
    setopt("announceLANAddresses", "false")
    setopt("restartOnWakeup", "false")
    # Both sides dial each other at start; when the simultaneous connections trip over each other
    # (seen: "Failed to exchange Hello messages"), the default retry is 60 s later. Setup only.
    setopt("reconnectionIntervalS", "5")
    # Syncthing renices itself by default; fybrk does not, so measure both at normal priority.
    setopt("setLowPriority", "false")
    for el in opts.findall("globalAnnounceServer"):
        el.text = ""
    opts.find("unackedNotificationID") is not None and opts.remove(opts.find("unackedNotificationID"))

    gui = root.find("gui")
    gui.find("address").text = f"127.0.0.1:{a.gui_port}"
    gui.find("apikey").text = a.apikey

    # The peer, with explicit addresses (no discovery of any kind).
    template = root.find("defaults/device")
    peer = ET.fromstring(ET.tostring(template))
    peer.set("id", a.peer_id)
    peer.set("name", a.peer_name)
    for el in peer.findall("address"):
        peer.remove(el)
    for i, url in enumerate([f"tcp://127.0.0.1:{a.peer_port}", f"quic://127.0.0.1:{a.peer_port}"]):
        el = ET.Element("address")
        el.text = url
        peer.insert(i, el)
    root.insert(list(root).index(me) + 1, peer)

    # The folder, from the defaults template, shared with both devices.
    folder = ET.fromstring(ET.tostring(root.find("defaults/folder")))
    folder.set("id", FOLDER_ID)
    folder.set("label", FOLDER_ID)
    folder.set("path", a.folder)
    folder.set("fsWatcherEnabled", "true")
    folder.set("fsWatcherDelayS", str(a.watch_delay))
    folder.set("rescanIntervalS", "3600")
    for el in folder.findall("device"):
        folder.remove(el)
    for i, dev in enumerate([me.get("id"), a.peer_id]):
        d = ET.Element("device", {"id": dev, "introducedBy": ""})
        ET.SubElement(d, "encryptionPassword").text = ""
        folder.insert(i + 1, d)
    root.insert(0, folder)
    tree.write(path)
    os.makedirs(os.path.join(a.folder, ".stfolder"), exist_ok=True)


class StApi:
    def __init__(self, url, key):
        self.url, self.key = url.rstrip("/"), key

    def get(self, path):
        req = urllib.request.Request(self.url + path, headers={"X-API-Key": self.key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def post(self, path):
        req = urllib.request.Request(self.url + path, data=b"", method="POST",
                                     headers={"X-API-Key": self.key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()


def st_conn(api, peer):
    return api.get("/rest/system/connections")["connections"].get(peer, {})


def st_idle(api_a, api_b, id_a, id_b):
    """Both folders idle with nothing needed, each side sees the other at 100%."""
    for api, other in ((api_a, id_b), (api_b, id_a)):
        st = api.get(f"/rest/db/status?folder={FOLDER_ID}")
        if st.get("state") != "idle" or st.get("needTotalItems", 0) != 0:
            return False
        c = api.get(f"/rest/db/completion?folder={FOLDER_ID}&device={other}")
        if c.get("completion") != 100 or c.get("needItems", 0) != 0:
            return False
    return True


def st_wait(a):
    api_a, api_b = StApi(a.url_a, a.key), StApi(a.url_b, a.key)
    deadline = time.time() + a.timeout
    while True:
        try:
            if (st_conn(api_a, a.id_b).get("connected") and st_conn(api_b, a.id_a).get("connected")
                    and st_idle(api_a, api_b, a.id_a, a.id_b)):
                c = st_conn(api_a, a.id_b)
                print(f"{c.get('type')} {c.get('address')}")
                return
        except OSError:
            pass  # REST not up yet
        if time.time() > deadline:
            sys.exit("syncthing instances did not connect within the timeout "
                     "(see their syncthing.log)")
        time.sleep(0.2)


# --- fybrk --------------------------------------------------------------------------------------

def fy_status(fybrk, state):
    out = subprocess.run([fybrk, "--state", state, "status", "--json"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def fy_peer(fybrk, state):
    peers = fy_status(fybrk, state).get("peers") or []
    return peers[0] if peers else {}


def fy_wait(a):
    deadline = time.time() + a.timeout
    while True:
        try:
            pa, pb = fy_peer(a.fybrk, a.state_a), fy_peer(a.fybrk, a.state_b)
            if pa.get("connected") and pb.get("connected"):
                print(f"{pa.get('addr')} rtt {pa.get('rtt_ms')} ms")
                return
        except (subprocess.SubprocessError, ValueError):
            pass
        if time.time() > deadline:
            sys.exit("the fybrk daemons did not connect within the timeout (see daemon.log)")
        time.sleep(0.2)


# --- the measurements ---------------------------------------------------------------------------

class Pair:
    """What `measure` needs to know about one pair of syncing instances."""

    def __init__(self, a):
        self.a = a
        self.kind = a.kind
        if self.kind == "syncthing":
            self.api_a, self.api_b = StApi(a.url_a, a.key), StApi(a.url_b, a.key)

    def nft(self):
        return (nft_counter(self.a.nft_table, f"{self.a.prefix}_a2b"),
                nft_counter(self.a.nft_table, f"{self.a.prefix}_b2a"))

    def app_counters(self):
        """(A out, A in, B out, B in) as the application reports them, in bytes."""
        if self.kind == "syncthing":
            ca, cb = st_conn(self.api_a, self.a.id_b), st_conn(self.api_b, self.a.id_a)
            return (ca.get("outBytesTotal"), ca.get("inBytesTotal"),
                    cb.get("outBytesTotal"), cb.get("inBytesTotal"))
        pa, pb = fy_peer(self.a.fybrk, self.a.state_a), fy_peer(self.a.fybrk, self.a.state_b)
        return (pa.get("bytes_out"), pa.get("bytes_in"), pb.get("bytes_out"), pb.get("bytes_in"))

    def idle(self):
        if self.kind == "syncthing":
            return st_idle(self.api_a, self.api_b, self.a.id_a, self.a.id_b)
        for state in (self.a.state_a, self.a.state_b):
            p = fy_peer(self.a.fybrk, state)
            if not p.get("connected") or not p.get("in_sync") or p.get("pending_items"):
                return False
        return True

    def wait_quiet(self, stable=3.0, timeout=120.0):
        """Until the pair reports idle and the loopback counters have not moved for `stable` s."""
        deadline = time.time() + timeout
        last, since = None, time.time()
        while True:
            cur = self.nft()
            if cur != last:
                last, since = cur, time.time()
            try:
                idle = self.idle()
            except (OSError, subprocess.SubprocessError, ValueError):
                idle = False
            if idle and time.time() - since >= stable:
                return
            if time.time() > deadline:
                raise Timeout(f"pair not quiet after {timeout:.0f} s (idle={idle})")
            time.sleep(0.25)


def write_file(path, parts, chunk=MIB):
    """Create/truncate path and write the given (file, offset, length) parts in 1 MiB writes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for src, off, length in parts:
            with open(src, "rb") as f:
                f.seek(off)
                left = length
                while left:
                    b = f.read(min(chunk, left))
                    if not b:
                        raise RuntimeError(f"{src} too short")
                    os.write(fd, b)
                    left -= len(b)
    finally:
        os.close(fd)


def drop_caches():
    """Writes back and drops the page cache (root only; a no-op otherwise)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        log(f"cannot drop the page cache ({e}): runs are less comparable")


def large_run(a, source, token):
    """One large-file run: `source` written on A with dd, verified on B as it arrives, then
    deleted on A (the deletion syncs too). Every run has a source of its own: fybrk keeps a
    deleted file's chunks in its history, so writing the same bytes again would send nothing.
    Returns the run's figures, or None when it failed (the error goes to a.run_errors)."""
    log(f"large file: {a.size_mib} MiB written on A with dd bs=1M, verified on B")
    res = {"errors": []}
    digests, whole = chunk_digests(source)
    big_a, big_b = os.path.join(a.dir_a, f"large-{token}.bin"), os.path.join(a.dir_b, f"large-{token}.bin")
    size = a.size_mib * MIB
    # CPU seconds each daemon spends on the large file: with both on this machine's cores, their
    # sum against cores x elapsed says whether the transfer is bound by CPU.
    cpu0 = {side: cpu_s(pid) for side, pid in (("a", a.pid_a), ("b", a.pid_b))}
    t0 = time.perf_counter()
    dd = subprocess.Popen(["dd", f"if={source}", f"of={big_a}", "bs=1M", "status=none"])
    dd_done = []
    waiter = threading.Thread(target=lambda: (dd.wait(), dd_done.append(time.perf_counter())))
    waiter.start()
    try:
        t1 = wait_verified(big_b, digests, size, a.big_timeout)
        waiter.join()
        res["large_write_s"] = dd_done[0] - t0
        res["large_total_s"] = t1 - t0
        res["large_mibs"] = a.size_mib / (t1 - t0)
        log(f"verified on B after {t1 - t0:.2f} s: {res['large_mibs']:.1f} MiB/s")
        for side, pid in (("a", a.pid_a), ("b", a.pid_b)):
            c1 = cpu_s(pid)
            res[f"large_cpu_{side}_s"] = None if c1 is None or cpu0[side] is None else c1 - cpu0[side]
        if res["large_cpu_a_s"] is not None and res["large_cpu_b_s"] is not None:
            log(f"daemon CPU over the large file: A {res['large_cpu_a_s']:.2f} s, "
                f"B {res['large_cpu_b_s']:.2f} s ({os.cpu_count()} cores x {t1 - t0:.2f} s elapsed)")
        if file_sha256(big_b) != whole:
            res["errors"].append("large: whole-file sha256 on B differs after chunk verification")
    except Timeout as e:
        log(f"FAILED: {e}")
        a.run_errors.append(f"throughput: {e}")
        return None
    except BaseException:
        dd.kill()  # interrupted: do not leave dd holding a file open on a mount
        raise
    finally:
        waiter.join()
    res["large_dd_rc"] = dd.returncode
    if dd.returncode != 0:
        res["errors"].append(f"throughput: dd exited {dd.returncode}")
    os.unlink(big_a)
    return res


def measure(a):
    pair = Pair(a)
    res = {"label": a.label, "kind": a.kind, "files": a.files, "size_mib": a.size_mib,
           "base_mib": a.base_mib, "errors": []}
    token = os.urandom(3).hex()
    udp0 = udp_snmp()

    # 1. small-file latency: close on A -> right content readable on B, one file at a time. One
    # warm-up file first (reported apart, not in the median): the first change after a connect
    # can pay one-off costs (Syncthing starts its watcher late, for one).
    log(f"small-file latency: 1 warm-up + {a.files} x 1 KiB, polling B every 5 ms")
    lat = []
    try:
        for i in range(a.files + 1):
            name = f"lat-{token}-{i:03d}.bin"
            data = os.urandom(1024)
            fd = os.open(os.path.join(a.dir_a, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
            t0 = time.perf_counter()
            deadline = t0 + a.lat_timeout
            pb = os.path.join(a.dir_b, name)
            while True:
                try:
                    with open(pb, "rb") as f:
                        if f.read() == data:
                            break
                except (FileNotFoundError, PermissionError):
                    pass
                if time.perf_counter() > deadline:
                    raise Timeout(f"{name} not on B after {a.lat_timeout:.0f} s")
                time.sleep(0.005)
            ms = (time.perf_counter() - t0) * 1000
            if i == 0:
                res["lat_warmup_ms"] = ms
            else:
                lat.append(ms)
        res["lat_samples_ms"] = [round(x, 1) for x in lat]
        s_lat = sorted(lat)
        n = len(s_lat)
        res["lat_median_ms"] = s_lat[n // 2] if n % 2 else (s_lat[n // 2 - 1] + s_lat[n // 2]) / 2
        res["lat_p90_ms"] = percentile(lat, 90)
        log(f"median {res['lat_median_ms']:.1f} ms, p90 {res['lat_p90_ms']:.1f} ms "
            f"(min {min(lat):.1f}, max {max(lat):.1f}; warm-up {res['lat_warmup_ms']:.1f})")
    except Timeout as e:
        res["errors"].append(f"latency: {e}")
        log(f"FAILED: {e}")

    # 2. large-file throughput: dd on A (in the background), verify on B as it arrives. Run
    # --large-runs times, each after dropping the page cache, and reported by the median run:
    # on a VM whose host takes back freed memory, whichever run comes first writes into memory
    # the host must back again (several times slower), and a single run charges that to
    # whichever pair the script happens to start with.
    runs = []
    for n, source in enumerate(a.large):
        if n:
            pair.wait_quiet(timeout=a.big_timeout)
        drop_caches()
        run = large_run(a, source, f"{token}-{n}")
        if run is None:
            break
        runs.append(run)
        log(f"run {n + 1} of {len(a.large)}: {run['large_mibs']:.1f} MiB/s")
    if runs:
        by_speed = sorted(runs, key=lambda r: r["large_mibs"])
        res.update(by_speed[(len(by_speed) - 1) // 2])
        res["large_runs_mibs"] = [round(r["large_mibs"], 1) for r in runs]
    else:
        res["errors"].append("throughput: no run finished")
    res["errors"].extend(e for r in runs for e in r.pop("errors", []))
    res["errors"].extend(a.run_errors)

    res["udp_drops_until_large"] = udp_drops(udp0, udp_snmp())
    if res["udp_drops_until_large"]:
        log(f"UDP drops so far (/proc/net/snmp): {res['udp_drops_until_large']}")

    # 3. insertion: 1 MiB of random data into the middle of a synced BASE MiB file.
    base_a, base_b = os.path.join(a.dir_a, f"insert-{token}.bin"), os.path.join(a.dir_b, f"insert-{token}.bin")
    base = a.base_mib * MIB
    mid = base // 2
    log(f"insertion: sync a {a.base_mib} MiB file first")
    try:
        pair.wait_quiet(timeout=a.big_timeout)
        write_file(base_a, [(a.base, 0, base)])
        bd, _ = a.base_digests
        wait_verified(base_b, bd, base, a.big_timeout)
        pair.wait_quiet(timeout=a.big_timeout)
        nft0, app0 = pair.nft(), pair.app_counters()
        udp_i0 = udp_snmp()
        log(f"rewrite it as head ({mid // MIB} MiB) + 1 MiB random + tail ({(base - mid) // MIB} MiB)")
        nd, _ = a.new_digests
        t0 = time.perf_counter()
        write_file(base_a, [(a.base, 0, mid), (a.insert, 0, MIB), (a.base, mid, base - mid)])
        t1 = wait_verified(base_b, nd, base + MIB, a.big_timeout)
        res["insert_sync_s"] = t1 - t0
        pair.wait_quiet(timeout=a.big_timeout)
        nft1, app1 = pair.nft(), pair.app_counters()
        res["udp_drops_insert"] = udp_drops(udp_i0, udp_snmp())
        res["insert_a2b"] = nft1[0] - nft0[0]
        res["insert_b2a"] = nft1[1] - nft0[1]
        res["insert_total"] = res["insert_a2b"] + res["insert_b2a"]
        names = ["app_a_out", "app_a_in", "app_b_out", "app_b_in"]
        for n, x0, x1 in zip(names, app0, app1):
            res[f"insert_{n}"] = None if x0 is None or x1 is None else x1 - x0
            if x0 is not None and x1 is not None and x1 < x0:
                res["errors"].append(f"insertion: {n} went backwards ({x0} -> {x1}): "
                                     "counter reset (reconnect?)")
        log(f"on B after {t1 - t0:.2f} s; wire A->B {res['insert_a2b'] / MIB:.2f} MiB, "
            f"B->A {res['insert_b2a'] / MIB:.2f} MiB; app: A out "
            f"{(res['insert_app_a_out'] or 0) / MIB:.2f} MiB, B in {(res['insert_app_b_in'] or 0) / MIB:.2f} MiB")
    except Timeout as e:
        res["errors"].append(f"insertion: {e}")
        log(f"FAILED: {e}")

    # 4. peak RSS of each daemon over the run.
    for side, pid in (("a", a.pid_a), ("b", a.pid_b)):
        hwm = proc_kib(pid, "VmHWM")
        res[f"rss_{side}_mib"] = None if hwm is None else hwm / 1024
        if hwm is None:
            res["errors"].append(f"rss: process {pid} ({side.upper()}) is gone")
    res["udp_drops_total"] = udp_drops(udp0, udp_snmp())
    if res["udp_drops_total"]:
        log(f"UDP drops over the run (/proc/net/snmp): {res['udp_drops_total']}; "
            f"during the insertion: {res.get('udp_drops_insert')}")
    log(f"peak RSS: A {res['rss_a_mib'] or 0:.1f} MiB, B {res['rss_b_mib'] or 0:.1f} MiB")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")


# --- the report ---------------------------------------------------------------------------------

def report(a):
    results = {}
    for path in a.results:
        with open(path) as f:
            r = json.load(f)
        results[r["label"]] = r
    fy = results.get("fybrk")
    st_labels = [k for k in results if k.startswith("syncthing")]
    any_r = next(iter(results.values()))
    files, size_mib, base_mib = any_r["files"], any_r["size_mib"], any_r["base_mib"]

    def get(r, key, scale=1.0):
        if r is None or r.get(key) is None:
            return None
        return r[key] * scale

    def rss_max(r):
        xs = [x for x in (get(r, "rss_a_mib"), get(r, "rss_b_mib")) if x is not None]
        return max(xs) if xs else None

    best_st_mibs = max([x for x in (get(results[k], "large_mibs") for k in st_labels) if x is not None],
                       default=None)
    inv = 1.0 / MIB

    def tail_s(r):
        total, write = get(r, "large_total_s"), get(r, "large_write_s")
        return None if total is None or write is None else total - write

    rows = [
        # (test, unit, key or fn, target, check(fy_value) -> bool)
        (f"small-file latency, median of {files} x 1 KiB", "ms", lambda r: get(r, "lat_median_ms"),
         "<= 100 ms", lambda v: v <= 100),
        (f"small-file latency, p90 of {files}", "ms", lambda r: get(r, "lat_p90_ms"), "-", None),
        ("  first file after connect (warm-up, not above)", "ms", lambda r: get(r, "lat_warmup_ms"),
         "-", None),
        (f"large file {size_mib} MiB, write start -> verified on B (median run)", "MiB/s",
         lambda r: get(r, "large_mibs"), ">= 3x Syncthing's (issue 15)",
         (lambda v: v >= 3 * best_st_mibs) if best_st_mibs is not None else None),
        ("  write on A (dd) done after", "s", lambda r: get(r, "large_write_s"), "-", None),
        ("  verified on B after", "s", lambda r: get(r, "large_total_s"), "-", None),
        # Replication while writing: what is left after A's last write (the record, the tail,
        # and B's read of the whole file to verify it).
        ("  verified on B, after the write ended", "s", tail_s, "-", None),
        ("  CPU time of daemon A (user + system) meanwhile", "s",
         lambda r: get(r, "large_cpu_a_s"), "-", None),
        ("  CPU time of daemon B (user + system) meanwhile", "s",
         lambda r: get(r, "large_cpu_b_s"), "-", None),
        (f"1 MiB insert into {base_mib} MiB: wire bytes A<->B", "MiB",
         lambda r: get(r, "insert_total", inv), "<= 4 MiB", lambda v: v <= 4),
        ("  of which A->B (nft, IP bytes on lo)", "MiB", lambda r: get(r, "insert_a2b", inv), "-", None),
        ("  of which B->A (nft, IP bytes on lo)", "MiB", lambda r: get(r, "insert_b2a", inv), "-", None),
        ("  app-reported A out (bytes_out / outBytesTotal)", "MiB",
         lambda r: get(r, "insert_app_a_out", inv), "-", None),
        ("  app-reported B in (bytes_in / inBytesTotal)", "MiB",
         lambda r: get(r, "insert_app_b_in", inv), "-", None),
        ("  time until B has the new version", "s", lambda r: get(r, "insert_sync_s"), "-", None),
        ("peak RSS (VmHWM), daemon A", "MiB", lambda r: get(r, "rss_a_mib"), "-", None),
        ("peak RSS (VmHWM), daemon B", "MiB", lambda r: get(r, "rss_b_mib"), "-", None),
        ("peak RSS, max of A and B", "MiB", rss_max, "<= 40 MiB", lambda v: v <= 40),
    ]

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"

    def fmt_ratio(x):
        if x is None:
            return "-"
        if x >= 0.1 or x <= 0:
            return f"{x:.2f}x"
        return f"{x:.{1 - math.floor(math.log10(x))}f}x"  # two significant digits, no exponent

    st_names = {k: "Syncthing " + results[k].get("watch", k) for k in st_labels}
    head = ["test", "unit", "fybrk"] + [st_names[k] for k in st_labels] + \
        [f"fybrk/{st_names[k].replace('Syncthing ', 'ST ')}" for k in st_labels] + ["target", "result"]
    table, out_rows = [head], []
    for test, unit, fn, target, check in rows:
        fv = fn(fy) if fy else None
        svs = [fn(results[k]) for k in st_labels]
        ratios = [fv / sv if fv is not None and sv else None for sv in svs]
        ok = check(fv) if check and fv is not None else None
        result = "-" if ok is None else ("PASS" if ok else "MISS")
        table.append([test, unit, fmt(fv)] + [fmt(v) for v in svs] +
                     [fmt_ratio(x) for x in ratios] + [target, result])
        out_rows.append({"test": test, "unit": unit, "fybrk": fv,
                         **{k: v for k, v in zip(st_labels, svs)},
                         **{f"fybrk/{k}": x for k, x in zip(st_labels, ratios)},
                         "target": target, "result": None if ok is None else result})
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    left = {0, 1, len(head) - 2}
    print()
    for n, line in enumerate(table):
        print("  ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    notes = []
    for k, r in results.items():
        if r.get("link"):
            notes.append(f"{k}: connected via {r['link']}")
        if r.get("large_runs_mibs"):
            runs = ", ".join(f"{x:,.1f}" for x in r["large_runs_mibs"])
            notes.append(f"{k}: large-file runs {runs} MiB/s (the median run is in the table)")
        if r.get("udp_drops_total"):
            notes.append(f"{k}: UDP datagrams dropped on lo over the run (/proc/net/snmp): "
                         f"{r['udp_drops_total']}, of which during the insertion: {r.get('udp_drops_insert')}")
        for e in r.get("errors", []):
            notes.append(f"{k}: ERROR {e}")
    if notes:
        print()
        for n in notes:
            print(n)
    doc = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": a.command,
        "rows": out_rows,
        "raw": results,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"\nresults written to {a.out}")


# --- command line -------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("free-ports")
    s.add_argument("n", type=int)

    s = sub.add_parser("gen-data")
    s.add_argument("path")
    s.add_argument("mib", type=int)

    s = sub.add_parser("st-config")
    s.add_argument("home")
    for k in ("--name", "--folder", "--apikey", "--peer-id", "--peer-name"):
        s.add_argument(k, required=True)
    for k in ("--port", "--gui-port", "--peer-port", "--watch-delay"):
        s.add_argument(k, type=int, required=True)

    s = sub.add_parser("st-wait")
    for k in ("--url-a", "--url-b", "--key", "--id-a", "--id-b"):
        s.add_argument(k, required=True)
    s.add_argument("--timeout", type=float, default=120)

    s = sub.add_parser("fy-wait")
    for k in ("--fybrk", "--state-a", "--state-b"):
        s.add_argument(k, required=True)
    s.add_argument("--timeout", type=float, default=60)

    s = sub.add_parser("measure")
    s.add_argument("--kind", choices=["syncthing", "fybrk"], required=True)
    # --large once per run of the large-file case, each a file of its own (see large_run).
    s.add_argument("--large", action="append", required=True)
    for k in ("--label", "--dir-a", "--dir-b", "--base", "--insert", "--out",
              "--nft-table", "--prefix", "--link"):
        s.add_argument(k, required=True)
    for k in ("--pid-a", "--pid-b", "--files", "--size-mib", "--base-mib"):
        s.add_argument(k, type=int, required=True)
    for k in ("--url-a", "--url-b", "--key", "--id-a", "--id-b", "--fybrk", "--state-a",
              "--state-b", "--watch"):
        s.add_argument(k)
    s.add_argument("--lat-timeout", type=float, default=60)
    s.add_argument("--big-timeout", type=float, default=900)

    s = sub.add_parser("report")
    s.add_argument("--command", required=True)
    s.add_argument("out")
    s.add_argument("results", nargs="+")

    a = p.parse_args()
    # SIGTERM (sync.sh's cleanup) unwinds like Ctrl-C, so `finally` blocks stop children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.cmd == "free-ports":
        print(" ".join(map(str, free_ports(a.n))))
    elif a.cmd == "gen-data":
        gen_data(a.path, a.mib)
    elif a.cmd == "st-config":
        st_config(a)
    elif a.cmd == "st-wait":
        st_wait(a)
    elif a.cmd == "fy-wait":
        fy_wait(a)
    elif a.cmd == "measure":
        a.base_digests = chunk_digests(a.base)
        a.new_digests = expected_insert_digests(a.base, a.insert)
        a.run_errors = []
        measure(a)
        # the pair's metadata the report wants
        with open(a.out) as f:
            r = json.load(f)
        r["link"] = a.link
        if a.watch:
            r["watch"] = a.watch
        with open(a.out, "w") as f:
            json.dump(r, f, indent=2)
            f.write("\n")
    elif a.cmd == "report":
        report(a)


def expected_insert_digests(base, insert):
    """1 MiB-chunk digests of head + insert + tail, the file after the insertion."""
    size = os.path.getsize(base)
    mid = size // 2
    with open(base, "rb") as f:
        head = f.read(mid)
        tail = f.read()
    with open(insert, "rb") as f:
        ins = f.read(MIB)
    data = head + ins + tail
    digests = [hashlib.sha256(data[i:i + MIB]).digest() for i in range(0, len(data), MIB)]
    return digests, hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    main()
