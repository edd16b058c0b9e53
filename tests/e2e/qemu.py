"""Drive a real (patched) QEMU for the end-to-end tests and the demo.

`Qemu` starts qemu-system-x86_64 with the microvm machine under the qtest
accelerator (no guest needed: filters, chardevs and QMP all work), a socket
netdev whose other end the test holds, and chardevs the test connects to, and
talks QMP to it. Framing helpers speak the redirector wire format.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(REPO, "build", "qemu", "qemu-system-x86_64")
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/lib/ipxe/qemu"]
# How long QEMU may take to exit after quit (longer under valgrind).
QUIT_TIMEOUT = float(os.environ.get("QNS_QUIT_TIMEOUT", "30"))


# How a sanitizer build (build/qemu-full) runs: it stops at its first
# report, which fails the test (Qemu.close); LeakSanitizer checks at exit.
# The environment's own settings win. scripts/test.sh passes these to
# QEMU's qtests too (--sanitizer-env).
SANITIZER_OPTIONS = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1:"
                     f"suppressions={REPO}/tests/ubsan.supp",
}
for _name, _value in SANITIZER_OPTIONS.items():
    os.environ.setdefault(_name, _value)

ASAN_COROUTINE_NOTICE = re.compile(
    r"^==\d+==WARNING: ASan doesn't fully support makecontext/swapcontext.*\n", re.M)
# What a sanitizer prints when it finds something (ASan, LSan, UBSan).
SANITIZER_REPORT = re.compile(r"ERROR: [A-Za-z]+Sanitizer|: runtime error: ")


def unavailable(reason):
    """What a test does when the machine lacks something it needs: a
    developer's run skips it and says why; under CI=true nothing is
    skipped, and the test fails with the same reason."""
    import pytest   # the harnesses and benchmarks use this module without it

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true skips nothing: {reason}", pytrace=False)
    pytest.skip(reason)


def poll(fetch, done=bool, timeout=10.0, interval=0.02):
    """The one polling loop of the tests, benchmarks and harnesses: call
    fetch() until done(what it returned) holds or `timeout` seconds have
    passed, and return what it returned last (the caller asserts on it, so
    that a failure shows the state things ended in)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(interval)


def wait_until(check, message, timeout=10.0, interval=0.02):
    """poll() until check() returns something true, and return it; if it
    never does, fail with `message` (a string, or a function of check()'s
    last result, for a message built from the state at the end)."""
    got = poll(check, timeout=timeout, interval=interval)
    if not got:
        raise AssertionError(message(got) if callable(message) else message)
    return got


def exit_status(rc):
    """A Popen return code in words: "status N" or "signal SIGSEGV"."""
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"status {rc}"


def frame(payload, vnet_hdr_len=None):
    """One frame of the redirector (and socket netdev) wire format."""
    out = struct.pack(">I", len(payload))
    if vnet_hdr_len is not None:
        out += struct.pack(">I", vnet_hdr_len)
    return out + payload


CLIENT_MAC, GUEST_MAC = bytes([0x52, 0x54, 0, 0, 0, 1]), bytes([0x52, 0x54, 0, 0, 0, 2])
CLIENT_IP, GUEST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def ipv4_frame(proto, l4, to_guest=True, client=1):
    """An Ethernet/IPv4 frame carrying `l4` (IP protocol `proto`), from
    10.0.0.`client` to 10.0.0.2, or the other way with to_guest=False."""
    client_ip = CLIENT_IP[:3] + bytes([client])
    src, dst = (client_ip, GUEST_IP) if to_guest else (GUEST_IP, client_ip)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, src, dst)
    csum = sum(struct.unpack(">10H", ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack(">H", ~csum & 0xFFFF) + ip[12:]
    macs = GUEST_MAC + CLIENT_MAC if to_guest else CLIENT_MAC + GUEST_MAC
    return macs + b"\x08\x00" + ip + l4


def udp_frame(sport, data):
    """An Ethernet/IPv4/UDP frame from 10.0.0.1:sport to 10.0.0.2:5000."""
    return ipv4_frame(17, struct.pack(">HHHH", sport, 5000, 8 + len(data), 0) + data)


TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10


def tcp_frame(flags, seq, ack, data=b"", to_guest=True, sport=40000, dport=80):
    """An Ethernet/IPv4/TCP segment of the connection 10.0.0.1:sport <->
    10.0.0.2:dport, in the direction `to_guest` says (checksum left 0:
    nothing here checks it)."""
    if not to_guest:
        sport, dport = dport, sport
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    return ipv4_frame(6, tcp + data, to_guest)


def recv_exactly(sock, n, timeout=10.0):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_frame(sock, vnet=False, timeout=10.0):
    """Read one frame; returns (payload, vnet_hdr_len or None)."""
    (length,) = struct.unpack(">I", recv_exactly(sock, 4, timeout))
    vnet_len = None
    if vnet:
        (vnet_len,) = struct.unpack(">I", recv_exactly(sock, 4, timeout))
    return recv_exactly(sock, length, timeout), vnet_len


class QmpError(Exception):
    def __init__(self, error):
        super().__init__(f"{error.get('class')}: {error.get('desc')}")
        self.error_class = error.get("class")
        self.desc = error.get("desc")


class Qemu:
    """A QEMU process with a QMP connection.

    `netdev_peer` is our end of the socketpair behind `-netdev socket,id=n0`
    (or `-netdev stream`, with `netdev="stream"`: the same framing), whose
    peer is a virtio-net NIC; with `netdev="hub"`, n0's peer is instead a
    hub whose other port is a second socket netdev n1, our end of which is
    `hub_peer`: what n0 sends comes out there, and what is written there,
    n0 receives (a NIC without a guest driver takes nothing).
    `chardevs` names unix-socket chardevs (server, no wait) to create; the test
    connects to them with `connect_chardev`. `extra_args` are appended.
    """

    def __init__(self, binary=None, chardevs=(), extra_args=(), env=None, wrapper=(),
                 netdev="socket", machine=("-M", "microvm", "-accel", "qtest"),
                 nic="virtio-net-device", pass_fds=()):
        self.binary = binary or os.environ.get("QNS_QEMU", DEFAULT_BINARY)
        self.dir = tempfile.mkdtemp(prefix="qns-e2e-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.netdev_peer, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs]
        # QNS_QEMU_WRAPPER runs every QEMU under a tool, e.g. valgrind.
        wrapper = list(wrapper) or os.environ.get("QNS_QEMU_WRAPPER", "").split()
        args = wrapper + [self.binary]
        for d in FIRMWARE_DIRS:
            args += ["-L", d]
        args += list(machine) + [
            "-nodefaults", "-display", "none",
            # A test that dies must not leave QEMU behind.
            "-run-with", "exit-with-parent=on",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        if netdev == "hub":
            self.hub_peer, hub_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds.append(hub_theirs)
            args += ["-netdev", f"socket,id=n0,fd={theirs.fileno()}",
                     "-netdev", f"socket,id=n1,fd={hub_theirs.fileno()}",
                     "-netdev", "hubport,id=p0,hubid=0,netdev=n0",
                     "-netdev", "hubport,id=p1,hubid=0,netdev=n1"]
        else:
            # "tap:IFNAME": an existing tap device (netdev_peer is then unused).
            args += ["-netdev", {
                "socket": f"socket,id=n0,fd={theirs.fileno()}",
                "stream": f"stream,id=n0,server=off,addr.type=fd,addr.str={theirs.fileno()}",
            }.get(netdev) or f"tap,id=n0,ifname={netdev[4:]},script=no,downscript=no,vhost=off",
                "-device", f"{nic},netdev=n0"]
        for name in chardevs:
            args += ["-chardev", f"socket,id={name},path={self.chardev_path(name)},server=on,wait=off"]
        args += list(extra_args)
        self.log_path = os.path.join(self.dir, "qemu.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, pass_fds=[f.fileno() for f in fds] + list(pass_fds), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        for f in fds:
            f.close()
        # QMP events, in the order QEMU sent them (see events())
        self._events = []
        try:
            self.qmp = self._connect_qmp()
            self._qmp_file = self.qmp.makefile("rb")
            greeting = self._read_message()
            assert "QMP" in greeting, greeting
            self.command("qmp_capabilities")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def chardev_path(self, name):
        return os.path.join(self.dir, f"{name}.sock")

    def _connect_qmp(self, timeout=30.0):
        def connect():
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited with {self.proc.returncode}: {self.stderr()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.qmp_path)
                return s
            except OSError:
                s.close()
                return None

        return wait_until(connect, f"QMP socket {self.qmp_path} did not accept", timeout, 0.05)

    def _read_message(self):
        self.qmp.settimeout(30.0)
        while True:
            line = self._qmp_file.readline()
            if not line:
                raise EOFError(f"QMP closed; QEMU log: {self.stderr()}")
            msg = json.loads(line)
            if "event" not in msg:
                return msg
            self._events.append(msg)

    def events(self, name=None):
        """The QMP events QEMU sent so far (those named `name`), each with
        its "timestamp"; a command (query-status here) reads what came."""
        self.command("query-status")
        return [e for e in self._events if name is None or e["event"] == name]

    def roundtrip_line(self, line):
        """Send one QMP command line (bytes, newline included) and return
        the reply line as it came, unparsed (for timing QMP itself)."""
        self.qmp.sendall(line)
        return self._qmp_file.readline()

    def command_raw(self, name, arguments=None):
        """Send a command; return the whole reply (return or error)."""
        cmd = {"execute": name}
        if arguments is not None:
            cmd["arguments"] = arguments
        self.qmp.sendall(json.dumps(cmd).encode() + b"\n")
        return self._read_message()

    def command(self, name, /, **arguments):
        reply = self.command_raw(name, arguments or None)
        if "error" in reply:
            raise QmpError(reply["error"])
        return reply["return"]

    def hmp(self, line):
        return self.command("human-monitor-command", **{"command-line": line})

    def stats(self, name=None):
        return self.command("query-netfilter-stats", **({"name": name} if name else {}))

    def stats_by_name(self):
        return {s["name"]: s for s in self.stats()}

    def connect_chardev(self, name, timeout=10.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.chardev_path(name))
        return s

    def wait_connected(self, timeout=10.0):
        """Wait until QEMU has accepted every connection to its socket
        chardevs (it accepts in its main loop)."""
        wait_until(lambda: not any(c["filename"].startswith("disconnected:")
                                   for c in self.command("query-chardev")),
                   "chardevs did not connect", timeout)

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Poll QMP until predicate(stats_by_name) holds; return the stats."""
        stats = poll(self.stats_by_name, predicate, timeout)
        if not predicate(stats):
            raise AssertionError(f"timed out waiting for {what}; stats: {json.dumps(stats, indent=1)}")
        return stats

    def stderr(self):
        """What QEMU printed, less ASan's one-line notice that QEMU's
        coroutines switch stacks (QEMU annotates the switches for it)."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return ASAN_COROUTINE_NOTICE.sub("", f.read().decode(errors="replace"))

    def close(self, check=True):
        """Quit QEMU (QMP quit) and check how it ended: exit status 0 within
        QUIT_TIMEOUT seconds. A signal (a crash, an abort, a sanitizer's
        report), another status, or a QEMU still running then (killed) fails
        with an AssertionError that quotes the end of QEMU's log, unless
        `check` is false (a test that already failed). Returns the status."""
        hung = False
        if self.proc.poll() is None:
            try:
                self.command_raw("quit")
            except (OSError, EOFError):
                pass
            try:
                self.proc.wait(timeout=QUIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait()
        self.qmp.close()
        self.netdev_peer.close()
        if hasattr(self, "hub_peer"):
            self.hub_peer.close()
        self.log.close()
        rc = self.proc.returncode
        if not check:
            return rc
        log = self.stderr()
        report = SANITIZER_REPORT.search(log)
        if hung or rc != 0 or report:
            why = (f"still running {QUIT_TIMEOUT:g} s after quit (killed)" if hung
                   else f"ended with {exit_status(rc)}")
            if report:
                why += "; a sanitizer reported an error"
                log = log[max(0, report.start() - 200):][:4000]
            else:
                log = log[-4000:]
            raise AssertionError(f"QEMU {why}; its log:\n{log}")
        # A QEMU that ended well leaves nothing behind (its log stays for
        # the one that did not).
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def __enter__(self):
        return self

    def close_after(self, exc):
        """Close after `exc` failed the test: how QEMU ended is added to
        it as a note, without hiding why the test failed."""
        try:
            self.close()
        except AssertionError as e:
            exc.add_note(str(e))

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            self.close()
        else:
            self.close_after(exc)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--sanitizer-env"]:
        for name in SANITIZER_OPTIONS:
            print(f"export {name}='{os.environ[name]}'")
