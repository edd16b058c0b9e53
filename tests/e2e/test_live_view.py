"""End-to-end: scripts/netfilter-top.py, the operator's live view, against
the patched QEMU.

The tool gets its own QMP monitor (chardev "top": QEMU serves one client at
a time per QMP socket, and the test holds -qmp). The chain on netdev n0:

    m0   filter-mirror      queue=tx  outdev=mir0
    r0   filter-redirector  queue=tx  outdev=out0
    cc0  colo-compare       (no traffic)

FRAMES go through m0 and r0 before the tool runs, so every value is exact
and the packet and byte counts nonzero. The tool reads query-stats (target
netfilter) where QEMU has it and query-netfilter-stats alone where it does
not; the tests detect which once per QEMU and expect the values of the same
QMP command, read by the test itself.
"""

import json
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from helpers import (
    BUCKETS, duration, histogram_bucket, payload, start_qemu, wait_connected, wait_counters,
)
from qemu import REPO, Qemu, frame, read_frame, unavailable, wait_until

TOOL = os.path.join(REPO, "scripts", "netfilter-top.py")
FRAMES = [payload(n, i) for i, n in enumerate([60, 1514, 9000])]
M0_LABELS = '{id="m0",type="filter-mirror",netdev="n0"}'


def start_chain(colo=False):
    """QEMU with m0 and r0 (and cc0) on n0, FRAMES sent through them."""
    chardevs = ["top", "mir0", "out0"] + (["pri", "sec", "ccout"] if colo else [])
    args = ["-mon", "chardev=top,mode=control",
            "-object", "filter-mirror,id=m0,netdev=n0,queue=tx,outdev=mir0",
            "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]
    if colo:
        args += ["-object", "iothread,id=io0",
                 "-object", "colo-compare,id=cc0,primary_in=pri,secondary_in=sec,"
                            "outdev=ccout,iothread=io0"]
    q = Qemu(chardevs=chardevs, extra_args=args)
    try:
        q.top = q.chardev_path("top")
        q.mir, q.out = q.connect_chardev("mir0"), q.connect_chardev("out0")
        wait_connected(q, "mir0")
        wait_connected(q, "out0")
        for p in FRAMES:
            q.netdev_peer.sendall(frame(p))
        # Once r0 wrote a frame out, m0 and r0 have counted it.
        for p in FRAMES:
            assert read_frame(q.out)[0] == p
            assert read_frame(q.mir)[0] == p
        q.has_query_stats = "return" in q.command_raw("query-stats", {"target": "netfilter"})
    except BaseException as e:
        q.close_after(e)
        raise
    return q


@pytest.fixture(scope="module")
def chain():
    """One idle QEMU for the tests that only read."""
    with start_chain(colo=True) as q:
        sent = (len(FRAMES), sum(map(len, FRAMES)))
        for s in q.stats():
            assert (s["packets-tx"], s["bytes-tx"]) == sent
        yield q


def run_tool(socket_path, *args, timeout=60):
    # A long QMP timeout: QEMU may run under valgrind (QNS_QEMU_WRAPPER).
    return subprocess.run([sys.executable, TOOL, socket_path, "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=timeout)


def run_json(q, *args):
    r = run_tool(q.top, "--json", *args)
    assert (r.returncode, r.stderr) == (0, "")
    return [json.loads(line) for line in r.stdout.splitlines()]


def by_name(line):
    return {o["name"]: o for o in line["objects"]}


def fallback_values(f):
    """query-netfilter-stats' entry as the tool names its stats."""
    values = {k: f[k] for k in ("packets-tx", "packets-rx", "bytes-tx", "bytes-rx")}
    for c in f.get("counters", []):
        values |= {f"{c['name']}-packets": c["packets"], f"{c['name']}-bytes": c["bytes"]}
    return values


def expected_objects(q):
    """{qom-path: (kind, netdev, values, cumulative stat names)} from the
    QMP command the tool reads."""
    filters = q.stats_by_name()
    if not q.has_query_stats:
        out = {}
        for name, f in filters.items():
            values = fallback_values(f)
            out[f"/objects/{name}"] = (f["type"], f["netdev"], values, set(values))
        return out
    cumulative = {(e["provider"], s["name"])
                  for e in q.command("query-stats-schemas") if e.get("target") == "netfilter"
                  for s in e["stats"] if s["type"] == "cumulative"}
    out = {}
    for e in q.command("query-stats", target="netfilter"):
        f = filters.get(e["qom-path"].rsplit("/", 1)[-1], {})
        kind = f.get("type") if e["provider"] == "netfilter" else e["provider"]
        values = {s["name"]: s["value"] for s in e["stats"] if isinstance(s["value"], int)}
        out[e["qom-path"]] = (kind, f.get("netdev"), values,
                              {n for n in values if (e["provider"], n) in cumulative})
    return out


def expected_histograms(q):
    """{qom-path: {name: buckets}}: query-stats' histograms."""
    return {e["qom-path"]: {s["name"]: s["value"] for s in e["stats"]
                            if isinstance(s["value"], list)}
            for e in q.command("query-stats", target="netfilter")}


def test_json_lines_have_exactly_what_qemu_reports(chain):
    want = expected_objects(chain)
    assert {"/objects/m0", "/objects/r0"} <= set(want)
    first, second = run_json(chain, "--count", "2", "--interval", "0.5")
    assert 0.4 < second["timestamp"] - first["timestamp"] < 5
    for line, rate in ((first, None), (second, 0.0)):
        assert line["source"] == ("query-stats" if chain.has_query_stats else "query-netfilter-stats")
        got = {o["qom-path"]: o for o in line["objects"]}
        assert set(got) == set(want)
        histograms = expected_histograms(chain) if chain.has_query_stats else {}
        for path, (kind, netdev, values, cumulative) in want.items():
            o = got[path]
            assert (o["name"], o["kind"], o["values"]) == (path.rsplit("/", 1)[-1], kind, values)
            # nothing held, nothing compared: no events, no quantiles
            assert o["histograms"] == {
                name: {"buckets": buckets, "count": 0, "p50": None, "p99": None, "max": None}
                for name, buckets in histograms.get(path, {}).items()}
            assert o.get("netdev", "absent") == (netdev if kind != "colo-compare" else "absent")
            # Rates need two samples; nothing moved between the two.
            assert o["rates"] == {n: rate for n in cumulative}


# The samples of a family of each type, by their suffix.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def parse_prometheus(text):
    """{metric: (type, {labels: value})}, checking that each family has its
    HELP and TYPE lines before its samples, and appears once; a histogram's
    samples are keyed by their suffix and labels ("_bucket{...}"), labels
    as written ("" for none)."""
    families, name = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in families, f"{name} twice"
        elif line.startswith("# TYPE "):
            _, _, type_name, kind = line.split()
            assert type_name == name
            families[name] = (kind, {})
        else:
            sample, value = line.rsplit(" ", 1)
            metric, brace, labels = sample.partition("{")
            kind = families[name][0]
            suffix = metric.removeprefix(name)
            assert metric.startswith(name) and suffix in SUFFIXES.get(kind, ("",)), line
            families[name][1][suffix + brace + labels] = value
    return families


def test_prometheus_file(chain, tmp_path):
    prom = tmp_path / "qemu.prom"
    run_json(chain, "--count", "2", "--interval", "0.2", "--prometheus", str(prom))
    assert os.listdir(tmp_path) == ["qemu.prom"]  # the temporary file was renamed
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    # a histogram's count stands for it (and its NAME-sum is its _sum)
    m0 = {name: (kind, samples.get(M0_LABELS, samples.get("_count" + M0_LABELS)))
          for name, (kind, samples) in parse_prometheus(prom.read_text()).items()
          if M0_LABELS in samples or "_count" + M0_LABELS in samples}
    n, size = str(len(FRAMES)), str(sum(map(len, FRAMES)))
    if chain.has_query_stats:
        assert m0["qemu_netfilter_packets_tx_total"] == ("counter", n)
        assert m0["qemu_netfilter_bytes_tx_total"] == ("counter", size)
        assert len(m0) == len(expected_objects(chain)["/objects/m0"][2])
    else:
        assert m0 == {
            "qemu_netfilter_packets_tx_total": ("counter", n),
            "qemu_netfilter_bytes_tx_total": ("counter", size),
            "qemu_netfilter_packets_rx_total": ("counter", "0"),
            "qemu_netfilter_bytes_rx_total": ("counter", "0"),
            "qemu_netfilter_outdev_packets_total": ("counter", n),
            "qemu_netfilter_outdev_bytes_total": ("counter", size),
            "qemu_netfilter_outdev_errors_packets_total": ("counter", "0"),
            "qemu_netfilter_outdev_errors_bytes_total": ("counter", "0"),
        }


# --- histograms: filter-buffer's delay, known; Prometheus, checked and scraped ---

HELD_S = 0.2  # bucket 18: [131072, 262143] µs, so every quantile is <= 0.262143 s


@pytest.fixture(scope="module")
def delayed():
    """b0 (filter-buffer) held three frames HELD_S and released them to r0;
    cc0 compared nothing. The tool gets its own QMP monitor (top)."""
    frames = [payload(n, i) for i, n in enumerate([60, 1514, 9000])]
    objects = ["filter-buffer,id=b0,netdev=n0,queue=tx,interval=100000000",
               "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
               "iothread,id=io0",
               "colo-compare,id=cc0,primary_in=pri,secondary_in=sec,outdev=ccout,iothread=io0"]
    with start_qemu(objects, ["top", "out0", "pri", "sec", "ccout"], connect=["out0"],
                    extra_args=["-mon", "chardev=top,mode=control"]) as q:
        q.top = q.chardev_path("top")
        for p in frames:
            q.netdev_peer.sendall(frame(p))
        wait_counters(q, "b0", buffered=(3, sum(map(len, frames))))
        time.sleep(HELD_S)
        q.command("qom-set", path="/objects/b0", property="status", value="off")
        for p in frames:
            assert read_frame(q.socks["out0"])[0] == p
        buckets, _ = duration(q, "b0", "delay")
        assert buckets[histogram_bucket(HELD_S * 1e6)] == 3, buckets
        yield q


def test_histogram_quantiles(delayed):
    (line,) = run_json(delayed, "--once")
    b0 = by_name(line)["b0"]
    buckets, total = duration(delayed, "b0", "delay")
    bound = (2 ** histogram_bucket(HELD_S * 1e6) - 1) / 1e6
    assert b0["histograms"] == {"delay": {"buckets": buckets, "count": 3, "p50": bound,
                                          "p99": bound, "max": bound}}
    assert b0["values"]["delay-sum"] == total
    r = run_tool(delayed.top, "--once")
    assert (r.returncode, r.stderr) == (0, "")
    rows = [line.split() for line in r.stdout.splitlines()]
    for p in ("p50", "p99", "max"):
        assert ["delay", p, "<=", f"{bound:.3g}", "seconds"] in rows, r.stdout
    assert ["delay", "count", "3"] in rows


def prometheus_samples(text):
    """{(metric, labels): float} of a Prometheus text exposition
    (parse_prometheus), whatever wrote it (node_exporter sorts the labels
    and adds metrics of its own); labels as a sorted tuple of (name, value),
    a bucket's `le` as a float."""
    samples = {}
    for name, (_, family) in parse_prometheus(text).items():
        for key, value in family.items():
            suffix, _, labels = key.partition("{")
            pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)
            labels = tuple(sorted((k, float(v) if k == "le" else v) for k, v in pairs))
            samples[(name + suffix, labels)] = float(value)
    return samples


def qmp_samples(q):
    """What the Prometheus file must hold for b0's delay and r0's counters,
    from QMP's own numbers."""
    def labels(name, kind, **more):
        return tuple(sorted({"id": name, "type": kind, "netdev": "n0", **more}.items()))

    b0 = labels("b0", "filter-buffer")
    buckets, total = duration(q, "b0", "delay")
    out = {("qemu_netfilter_delay_seconds_sum", b0): total / 1e6,
           ("qemu_netfilter_delay_seconds_count", b0): sum(buckets)}
    for i in range(BUCKETS):
        le = float("inf") if i == BUCKETS - 1 else (2 ** i - 1) / 1e6
        out[("qemu_netfilter_delay_seconds_bucket", labels("b0", "filter-buffer", le=le))] = \
            sum(buckets[:i + 1])
    (r0,) = q.stats("r0")
    r0_labels = labels("r0", "filter-redirector")
    out[("qemu_netfilter_packets_tx_total", r0_labels)] = r0["packets-tx"]
    out[("qemu_netfilter_bytes_tx_total", r0_labels)] = r0["bytes-tx"]
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool):
    path = shutil.which(tool) or shutil.which(tool, path="/usr/bin:/usr/sbin")
    if path is None:
        unavailable(f"{tool} is not installed (scripts/deps.sh installs it)")
    return path


def test_prometheus_histograms_pass_promtool_and_node_exporter(delayed, tmp_path):
    """The file is valid for promtool, node_exporter's textfile collector
    serves it, and its histogram and counters are QMP's numbers."""
    promtool, exporter = need("promtool"), need("prometheus-node-exporter")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    prom = textfiles / "qemu.prom"
    run_json(delayed, "--once", "--prometheus", str(prom))
    text = prom.read_text()
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert (check.returncode, check.stdout + check.stderr) == (0, ""), text
    assert "# TYPE qemu_netfilter_delay_seconds histogram" in text
    assert "# TYPE qemu_colo_compare_release_latency_seconds histogram" in text
    samples = prometheus_samples(text)
    want = qmp_samples(delayed)
    assert {k: samples.get(k) for k in want} == want
    assert "qemu_netfilter_delay_sum_seconds_total" not in text  # it is the _sum

    port = free_port()
    proc = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{port}",
                             "--collector.disable-defaults", "--collector.textfile",
                             f"--collector.textfile.directory={textfiles}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return prometheus_samples(r.read().decode())
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            return None

    try:
        scraped = wait_until(scrape, "node_exporter did not answer", 30, 0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert scraped[("node_textfile_scrape_error", ())] == 0
    assert {k: scraped.get(k) for k in want} == want
    ours = {k: v for k, v in samples.items()}
    assert {k: scraped.get(k) for k in ours} == ours


def test_human_view_lists_every_filter(chain):
    r = run_tool(chain.top, "--once")
    assert (r.returncode, r.stderr) == (0, "")
    # Not a terminal: plain tables, no escape sequences.
    assert "\x1b" not in r.stdout
    assert r.stdout.count("netfilter-top ") == 1
    for word in ["m0", "r0", "filter-mirror", "filter-redirector", "packets-tx", "RATE/s"]:
        assert word in r.stdout
    if chain.has_query_stats:
        assert "cc0" in r.stdout


# --- bad input: one line on stderr, no traceback --------------------------

def assert_fails(r, message):
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("netfilter-top: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr


def test_socket_path_missing(tmp_path):
    assert_fails(run_tool(str(tmp_path / "nope.sock")), "nope.sock: No such file or directory")


def test_not_a_socket(tmp_path):
    (tmp_path / "file").write_text("")
    assert_fails(run_tool(str(tmp_path / "file")), "file: not a socket")


class FakeServer(threading.Thread):
    """A unix socket server: `serve(conn)` talks to each client."""

    def __init__(self, path, serve):
        super().__init__(daemon=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        self.serve = serve
        self.start()

    def run(self):
        with self.listener, self.listener.accept()[0] as conn:
            self.serve(conn)


@pytest.mark.parametrize("serve, message", [
    (lambda c: (c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n"), c.recv(1)), "does not speak QMP"),
    (lambda c: c.recv(1), "no QMP greeting within 1 s"),
    (lambda c: None, "closed the connection before the QMP greeting"),
], ids=["garbage", "silent", "hangs-up"])
def test_not_qmp(tmp_path, serve, message):
    path = str(tmp_path / "not-qmp.sock")
    server = FakeServer(path, serve)
    r = run_tool(path, "--timeout", "1")
    assert_fails(r, message)
    server.join(timeout=10)


# --- QEMU changing under the running tool ---------------------------------

class LiveTool:
    """The tool running in the background with --json; its lines as they come."""

    def __init__(self, socket_path, *args):
        # The tool as a terminal starts it, so that SIGINT (Ctrl-C) stops
        # it: a test run started as a background job has SIGINT ignored,
        # and a child would inherit that (a handler set here is not).
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.proc = subprocess.Popen(
            [sys.executable, TOOL, socket_path, "--json", "--timeout", "30", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self):
        return by_name(self.lines.get(timeout=30))

    def wait_for(self, predicate):
        """Next line (objects by name) where predicate holds; skips others."""
        for _ in range(100):
            objects = self.next()
            if predicate(objects):
                return objects
        raise AssertionError("no such line in 100 refreshes")

    def finish(self):
        return self.proc.wait(timeout=30), self.proc.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_qemu_killed_under_the_tool():
    with start_chain() as q, LiveTool(q.top, "--count", "100", "--interval", "0.2") as tool:
        assert {"m0", "r0"} <= set(tool.next())
        # SIGTERM, not SIGKILL: QEMU goes all the same, and exits the way
        # valgrind (QNS_QEMU_WRAPPER) needs to write its leak summary
        q.proc.terminate()
        q.proc.wait()
        assert tool.finish() == (1, "netfilter-top: QEMU closed the QMP connection\n")


def cumulative(obj):
    """The object's cumulative values (those with a rate)."""
    return [obj["values"][name] for name in obj["rates"]]


def test_filters_deleted_and_recreated_under_the_tool():
    with start_chain() as q, LiveTool(q.top, "--count", "200", "--interval", "0.2") as tool:
        objs = tool.next()
        assert {"m0", "r0"} <= set(objs) and any(cumulative(objs["r0"]))
        # r0 re-created under the same id: its counters start again from 0,
        # which the tool must not take for a negative rate.
        q.command("object-del", id="r0")
        q.command("object-add", **{"qom-type": "filter-redirector", "id": "r0", "netdev": "n0",
                                   "queue": "tx", "outdev": "out0"})
        objs = tool.wait_for(lambda objs: "r0" in objs and not any(cumulative(objs["r0"])))
        assert objs["r0"]["rates"] and all(r is None for r in objs["r0"]["rates"].values())
        assert all(r == 0.0 for r in tool.next()["r0"]["rates"].values())

        q.command("object-del", id="m0")
        tool.wait_for(lambda objs: "m0" not in objs)
        for _ in range(2):
            assert set(tool.next()) == {"r0"}
        # Ctrl-C
        tool.proc.send_signal(signal.SIGINT)
        code, err = tool.finish()
        assert code == 130, "Ctrl-C must exit 130 (docs/live-view.md)"
        assert err == ""


# --- query-stats' reply, as the series defines it -------------------------

def greeting():
    return {"QMP": {"version": {"qemu": {"major": 10, "minor": 2, "micro": 2}, "package": ""},
                    "capabilities": []}}


def fake_qmp(replies):
    """serve() for FakeServer: a QMP server answering each command with
    replies[command](arguments)."""
    def serve(conn):
        conn.sendall(json.dumps(greeting()).encode() + b"\r\n")
        # QMP needs no newline between messages: read JSON values.
        decoder, text = json.JSONDecoder(), ""
        while chunk := conn.recv(65536):
            text += chunk.decode()
            while text.strip():
                try:
                    msg, end = decoder.raw_decode(text.lstrip())
                except json.JSONDecodeError:
                    break  # the rest has not arrived yet
                text = text.lstrip()[end:]
                reply = {"return": replies[msg["execute"]](msg.get("arguments"))}
                if "id" in msg:
                    reply["id"] = msg["id"]
                conn.sendall(json.dumps(reply).encode() + b"\r\n")  # as QEMU ends its lines
    return serve


def stats_entry(provider, name, **values):
    return {"provider": provider, "qom-path": f"/objects/{name}",
            "stats": [{"name": k.replace("_", "-"), "value": v} for k, v in values.items()]}


def test_query_stats_schema_units_and_recreated_objects(tmp_path):
    schemas = [
        {"provider": "netfilter", "target": "netfilter", "stats": [
            {"name": "packets-tx", "type": "cumulative", "base": 10, "exponent": 0},
            {"name": "bytes-tx", "type": "cumulative", "unit": "bytes", "base": 10, "exponent": 0},
            {"name": "queued", "type": "instant", "unit": "bytes", "base": 10, "exponent": 0},
            {"name": "sizes", "type": "log2-histogram", "base": 10, "exponent": 0}]},
        {"provider": "colo-compare", "target": "netfilter", "stats": [
            {"name": "compare-time", "type": "cumulative", "unit": "seconds", "base": 10,
             "exponent": -6}]},
        {"provider": "cryptodev", "target": "cryptodev", "stats": [
            {"name": "sym-encrypt-ops", "type": "cumulative", "exponent": 0}]},
    ]
    samples = [
        [stats_entry("netfilter", "f0", packets_tx=10, bytes_tx=1000, queued=7, sizes=[1, 2]),
         stats_entry("colo-compare", "cc0", compare_time=1500)],
        [stats_entry("netfilter", "f0", packets_tx=30, bytes_tx=5000, queued=3, sizes=[1, 2]),
         stats_entry("colo-compare", "cc0", compare_time=3500)],
        # f0 deleted and re-created: counters back to low values; f1 new.
        [stats_entry("netfilter", "f0", packets_tx=2, bytes_tx=100, queued=0, sizes=[]),
         stats_entry("netfilter", "f1", packets_tx=1, bytes_tx=60, queued=0, sizes=[]),
         stats_entry("colo-compare", "cc0", compare_time=3500)],
    ]
    calls = []

    def query_stats(arguments):
        assert arguments == {"target": "netfilter"}
        calls.append(arguments)
        # The first call is the tool's probe.
        return samples[max(0, len(calls) - 2)]

    filters = [{"name": "f0", "netdev": "n0", "type": "filter-redirector"},
               {"name": "f1", "netdev": "n1", "type": "filter-mirror"}]
    path, prom = str(tmp_path / "qmp.sock"), tmp_path / "qemu.prom"
    FakeServer(path, fake_qmp({
        "qmp_capabilities": lambda a: {}, "query-stats": query_stats,
        "query-stats-schemas": lambda a: schemas, "query-netfilter-stats": lambda a: filters,
    }))
    r = run_tool(path, "--json", "--count", "3", "--interval", "0.2", "--prometheus", str(prom))
    assert (r.returncode, r.stderr) == (0, "")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    first, second, third = map(by_name, lines)

    # two buckets: 0, then everything from 1 on (no bound: "+Inf")
    assert first["f0"] == {"name": "f0", "qom-path": "/objects/f0", "kind": "filter-redirector",
                           "netdev": "n0", "values": {"packets-tx": 10, "bytes-tx": 1000, "queued": 7},
                           "rates": {"packets-tx": None, "bytes-tx": None},
                           "histograms": {"sizes": {"buckets": [1, 2], "count": 3, "p50": "+Inf",
                                                    "p99": "+Inf", "max": "+Inf"}}}
    assert first["cc0"] == {"name": "cc0", "qom-path": "/objects/cc0", "kind": "colo-compare",
                            "values": {"compare-time": 1500}, "rates": {"compare-time": None},
                            "histograms": {}}
    assert third["f1"]["histograms"] == {"sizes": {"buckets": [], "count": 0, "p50": None,
                                                   "p99": None, "max": None}}
    seconds = lines[1]["timestamp"] - lines[0]["timestamp"]
    assert second["f0"]["rates"] == pytest.approx({"packets-tx": 20 / seconds,
                                                   "bytes-tx": 4000 / seconds}, rel=0.2)
    assert second["cc0"]["rates"] == pytest.approx({"compare-time": 2000 / seconds}, rel=0.2)
    assert third["f0"]["rates"] == third["f1"]["rates"] == {"packets-tx": None, "bytes-tx": None}
    assert third["cc0"]["rates"] == {"compare-time": 0.0}

    f0 = '{id="f0",type="filter-redirector",netdev="n0"}'
    f1 = '{id="f1",type="filter-mirror",netdev="n1"}'
    assert parse_prometheus(prom.read_text()) == {
        "qemu_netfilter_packets_tx_total": ("counter", {f0: "2", f1: "1"}),
        "qemu_netfilter_bytes_tx_total": ("counter", {f0: "100", f1: "60"}),
        "qemu_netfilter_queued_bytes": ("gauge", {f0: "0", f1: "0"}),
        "qemu_netfilter_sizes": ("histogram", {
            f'_bucket{f0[:-1]},le="+Inf"}}': "0", "_sum" + f0: "0", "_count" + f0: "0",
            f'_bucket{f1[:-1]},le="+Inf"}}': "0", "_sum" + f1: "0", "_count" + f1: "0"}),
        "qemu_colo_compare_compare_time_seconds_total": ("counter", {'{id="cc0"}': "0.0035"}),
    }
