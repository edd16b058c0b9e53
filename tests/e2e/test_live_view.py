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
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest

from helpers import payload, wait_connected
from qemu import REPO, Qemu, frame, read_frame

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


def test_json_lines_have_exactly_what_qemu_reports(chain):
    want = expected_objects(chain)
    assert {"/objects/m0", "/objects/r0"} <= set(want)
    first, second = run_json(chain, "--count", "2", "--interval", "0.5")
    assert 0.4 < second["timestamp"] - first["timestamp"] < 5
    for line, rate in ((first, None), (second, 0.0)):
        assert line["source"] == ("query-stats" if chain.has_query_stats else "query-netfilter-stats")
        got = {o["qom-path"]: o for o in line["objects"]}
        assert set(got) == set(want)
        for path, (kind, netdev, values, cumulative) in want.items():
            o = got[path]
            assert (o["name"], o["kind"], o["values"]) == (path.rsplit("/", 1)[-1], kind, values)
            assert o.get("netdev", "absent") == (netdev if kind != "colo-compare" else "absent")
            # Rates need two samples; nothing moved between the two.
            assert o["rates"] == {n: rate for n in cumulative}


def parse_prometheus(text):
    """{metric: (type, {labels: value})}, checking that each family has its
    HELP and TYPE lines before its samples, and appears once."""
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
            sample, value = line.split(" ")
            metric, labels = sample.split("{", 1)
            assert metric == name, line
            families[name][1]["{" + labels] = value
    return families


def test_prometheus_file(chain, tmp_path):
    prom = tmp_path / "qemu.prom"
    run_json(chain, "--count", "2", "--interval", "0.2", "--prometheus", str(prom))
    assert os.listdir(tmp_path) == ["qemu.prom"]  # the temporary file was renamed
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    m0 = {name: (kind, samples[M0_LABELS])
          for name, (kind, samples) in parse_prometheus(prom.read_text()).items()
          if M0_LABELS in samples}
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
        assert code == 130, "Ctrl-C must exit 130 (README)"
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

    assert first["f0"] == {"name": "f0", "qom-path": "/objects/f0", "kind": "filter-redirector",
                           "netdev": "n0", "values": {"packets-tx": 10, "bytes-tx": 1000, "queued": 7},
                           "rates": {"packets-tx": None, "bytes-tx": None}}
    assert first["cc0"] == {"name": "cc0", "qom-path": "/objects/cc0", "kind": "colo-compare",
                            "values": {"compare-time": 1500}, "rates": {"compare-time": None}}
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
        "qemu_colo_compare_compare_time_seconds_total": ("counter", {'{id="cc0"}': "0.0035"}),
    }
