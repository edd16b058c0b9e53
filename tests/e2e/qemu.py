"""Drive a real (patched) QEMU for the end-to-end tests and the demo.

`Qemu` starts qemu-system-x86_64 with the microvm machine under the qtest
accelerator (no guest needed: filters, chardevs and QMP all work), a socket
netdev whose other end the test holds, and chardevs the test connects to, and
talks QMP to it. Framing helpers speak the redirector wire format.
"""

import json
import os
import socket
import struct
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(REPO, "build", "qemu", "qemu-system-x86_64")
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/lib/ipxe/qemu"]


def frame(payload, vnet_hdr_len=None):
    """One frame of the redirector (and socket netdev) wire format."""
    out = struct.pack(">I", len(payload))
    if vnet_hdr_len is not None:
        out += struct.pack(">I", vnet_hdr_len)
    return out + payload


def udp_frame(sport, data):
    """An Ethernet/IPv4/UDP frame from 10.0.0.1:sport to 10.0.0.2:5000."""
    udp = struct.pack(">HHHH", sport, 5000, 8 + len(data), 0) + data
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    csum = sum(struct.unpack(">10H", ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack(">H", ~csum & 0xFFFF) + ip[12:]
    eth = bytes([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00])
    return eth + ip + udp


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
    (or `-netdev stream`, with `netdev="stream"`: the same framing).
    `chardevs` names unix-socket chardevs (server, no wait) to create; the test
    connects to them with `connect_chardev`. `extra_args` are appended.
    """

    def __init__(self, binary=None, chardevs=(), extra_args=(), env=None, wrapper=(),
                 netdev="socket"):
        self.binary = binary or os.environ.get("QNS_QEMU", DEFAULT_BINARY)
        self.dir = tempfile.mkdtemp(prefix="qns-e2e-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.netdev_peer, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # QNS_QEMU_WRAPPER runs every QEMU under a tool, e.g. valgrind.
        wrapper = list(wrapper) or os.environ.get("QNS_QEMU_WRAPPER", "").split()
        args = wrapper + [self.binary]
        for d in FIRMWARE_DIRS:
            args += ["-L", d]
        args += [
            "-M", "microvm", "-accel", "qtest", "-nodefaults", "-display", "none",
            # A test that dies must not leave QEMU behind.
            "-run-with", "exit-with-parent=on",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-netdev", {
                "socket": f"socket,id=n0,fd={theirs.fileno()}",
                "stream": f"stream,id=n0,server=off,addr.type=fd,addr.str={theirs.fileno()}",
            }[netdev],
            "-device", "virtio-net-device,netdev=n0",
        ]
        for name in chardevs:
            args += ["-chardev", f"socket,id={name},path={self.chardev_path(name)},server=on,wait=off"]
        args += list(extra_args)
        self.log_path = os.path.join(self.dir, "qemu.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        theirs.close()
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
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited with {self.proc.returncode}: {self.stderr()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.qmp_path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read_message(self):
        self.qmp.settimeout(30.0)
        while True:
            line = self._qmp_file.readline()
            if not line:
                raise EOFError(f"QMP closed; QEMU log: {self.stderr()}")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

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
        deadline = time.monotonic() + timeout
        while any(c["filename"].startswith("disconnected:") for c in self.command("query-chardev")):
            if time.monotonic() > deadline:
                raise AssertionError("chardevs did not connect")
            time.sleep(0.02)

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Poll QMP until predicate(stats_by_name) holds; return the stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats_by_name()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stats: {json.dumps(stats, indent=1)}")
            time.sleep(0.02)

    def stderr(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        """Quit QEMU cleanly (QMP quit); kill it if it does not go."""
        if self.proc.poll() is None:
            try:
                self.command_raw("quit")
            except (OSError, EOFError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.qmp.close()
        self.netdev_peer.close()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
