"""Boot the test guest (scripts/build-guest.sh) in the patched QEMU and
drive it through its serial console.

The guest is a Debian kernel with a busybox initramfs whose init hands
ttyS0 to a shell; `Guest.sh` runs one command there and returns its output.
It boots under KVM where /dev/kvm can run a Linux guest (not PVM, whose
/dev/kvm cannot) and under TCG otherwise, with the TSC frequency and the
delay-loop calibration given on the command line so that a loaded 2-core
host cannot stall the calibration.
"""

import functools
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

from qemu import REPO, Qemu, poll  # noqa: E402

GUEST_MAC = "52:54:00:00:00:02"
FULL_BINARY = os.path.join(REPO, "build", "qemu-full", "qemu-system-x86_64")
BOOT_TIMEOUT = 240


@functools.cache
def guest_dir():
    """The guest's directory, built or found once per test run."""
    return subprocess.run([os.path.join(REPO, "scripts", "build-guest.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


def accel():
    """kvm where it can boot Linux, tcg otherwise (QNS_GUEST_ACCEL overrides)."""
    forced = os.environ.get("QNS_GUEST_ACCEL")
    if forced:
        return forced
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm"):
        return "kvm"
    return "tcg"


def host_tsc_khz():
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", f.read(), re.M)
    return int(float(m.group(1)) * 1000) if m else 2000000


class Guest(Qemu):
    """A QEMU running the test guest, with `sh()` on its console.

    `machine` is "microvm" (virtio-net-device) or "q35"/"pc" (a PCI NIC);
    with `incoming`, QEMU waits for a migration (`-incoming defer`) instead
    of booting: its guest is the one migrated to it. The other arguments
    are Qemu's.
    """

    def __init__(self, binary=None, machine="microvm", nic="virtio-net-device",
                 extra_args=(), incoming=False, **kwargs):
        d = guest_dir()
        self.console, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        khz = host_tsc_khz()
        # Debian's kernel runs at HZ=250: lpj is the TSC's cycles per jiffy.
        cmdline = (f"console=ttyS0 panic=-1 ipv6.disable=1 quiet tsc_early_khz={khz} "
                   f"lpj={khz * 1000 // 250} no_timer_check tsc=reliable")
        a = accel()
        if machine == "microvm":
            mach = ["-M", "microvm,pit=on,rtc=on", "-accel", a]
        else:
            mach = ["-M", machine, "-accel", a]
        if a == "tcg":
            mach += ["-cpu", "max"]
        args = ["-m", "256", "-kernel", os.path.join(d, "vmlinuz"),
                "-initrd", os.path.join(d, "initrd.gz"), "-append", cmdline,
                "-chardev", f"socket,id=con,fd={theirs.fileno()}", "-serial", "chardev:con",
                # thread names ("CPU 0/TCG") for benches/guest.py
                "-name", "qns-guest,debug-threads=on",
                "-no-reboot"] + list(extra_args) + (["-incoming", "defer"] if incoming else [])
        nic = f"{nic},mac={GUEST_MAC}"
        try:
            super().__init__(binary=binary, machine=mach, nic=nic, extra_args=args,
                             pass_fds=[theirs.fileno()], **kwargs)
        finally:
            theirs.close()
        self.buf = b""
        self.booted = time.monotonic()
        if incoming:
            return
        try:
            self.expect(b"QNS-GUEST-READY", BOOT_TIMEOUT)
            self.boot_seconds = time.monotonic() - self.booted
            # A quiet shell: no echo, no prompt. (The markers are quoted so
            # that an echoed command line never matches them.)
            self.console.sendall(b"stty -echo; PS1=''; echo QNS-SHELL''-UP\n")
            self.expect(b"QNS-SHELL-UP\r\n", 60)
        except BaseException:
            self.close(check=False)
            raise

    def expect(self, marker, timeout):
        """Read the console until `marker`; return what came before it."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"guest console: no {marker!r} after {timeout} s; "
                                     f"console: {self.buf[-3000:]!r}; QEMU: {self.stderr()[-2000:]}")
            self.console.settimeout(min(left, 1.0))
            try:
                chunk = self.console.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"guest console closed; console: {self.buf[-3000:]!r}")
            self.buf += chunk
        before, self.buf = self.buf.split(marker, 1)
        return before

    def resync(self, timeout=60):
        """Take the console of a guest that ran elsewhere until now (a COLO
        secondary that takes over): forget what it printed, and wait for
        its shell to answer."""
        self.buf = b""
        self.console.sendall(b"\necho QNS-RESYNC''-UP\n")
        self.expect(b"QNS-RESYNC-UP\r\n", timeout)

    def sh(self, command, timeout=120, check=True):
        """Run `command` in the guest's shell; return its output (str)."""
        self.console.sendall(command.encode() + b"; echo QNS-RC''=$?\n")
        out = self.expect(b"QNS-RC=", timeout)
        rc = int(self.expect(b"\r\n", 10))
        text = out.decode(errors="replace").replace("\r\n", "\n")
        if check and rc != 0:
            raise AssertionError(f"guest: {command!r} exited {rc}: {text}")
        return text

    def sh_during(self, command, marker, action, timeout=120):
        """Run `command` in the guest's shell, call action() once it has
        printed `marker`, and return its output after the marker. (The
        command runs in the foreground: a background job's end has been
        seen to end the console's shell.)"""
        self.console.sendall(command.encode() + b"; echo QNS-RC''=$?\n")
        self.expect(marker, timeout)
        action()
        out = self.expect(b"QNS-RC=", timeout)
        rc = int(self.expect(b"\r\n", 10))
        text = out.decode(errors="replace").replace("\r\n", "\n")
        if rc != 0:
            raise AssertionError(f"guest: {command!r} exited {rc}: {text}")
        return text

    def nic_stats(self, iface="eth0"):
        """The guest driver's own counters."""
        out = self.sh(f"cd /sys/class/net/{iface}/statistics && "
                      "echo $(cat tx_packets tx_bytes rx_packets rx_bytes)")
        txp, txb, rxp, rxb = map(int, out.split())
        return {"tx_packets": txp, "tx_bytes": txb, "rx_packets": rxp, "rx_bytes": rxb}

    def close(self, check=True):
        try:
            return super().close(check)
        finally:
            self.console.close()


def record(kind, name, **values):
    """Write what a test measured to target/KIND/NAME.json (and print it),
    for BENCHMARKS.md."""
    d = os.path.join(REPO, "target", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.json"), "w") as f:
        json.dump(values, f, indent=1)
    print(name, values)


class FrameReader:
    """Read frames of the socket netdev / redirector wire format from `sock`
    in a thread, counting them: at most `chunk` bytes a read, `pause` s
    between reads (a slow peer); with pause None it does not read until
    `pause` is set."""

    def __init__(self, sock, vnet=False, chunk=1 << 20, pause=0):
        self.sock, self.vnet, self.chunk, self.pause = sock, vnet, chunk, pause
        self.packets = self.bytes = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        hdr = 8 if self.vnet else 4
        buf = b""
        self.sock.settimeout(0.2)
        while not self.stop:
            if self.pause is None:
                time.sleep(0.05)
                continue
            try:
                chunk = self.sock.recv(self.chunk)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= hdr:
                (length,) = struct.unpack(">I", buf[:4])
                if len(buf) < hdr + length:
                    break
                buf = buf[hdr + length:]
                self.packets += 1
                self.bytes += length
            if self.pause:
                time.sleep(self.pause)

    def count(self):
        return self.packets, self.bytes

    def wait_for(self, packets, timeout=60):
        return poll(self.count, lambda c: c[0] >= packets, timeout, 0.05)

    def close(self):
        self.stop = True
        self.thread.join()


class Tap:
    """A tap device on the host with IPv6 off (nothing of the host's own
    reaches the guest unasked) and, if given, an IPv4 address; `sock` is a
    packet socket on it."""

    def __init__(self, name, address=None):
        self.name = name
        # one left by a run that was killed
        subprocess.run(["ip", "link", "del", name], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
        if address:
            subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self.sock.bind((name, 0))

    def stats(self):
        """The host's counters of the tap (rx: what QEMU wrote to it)."""
        d = f"/sys/class/net/{self.name}/statistics"
        return {k: int(open(f"{d}/{k}").read()) for k in
                ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}

    def wait_frame(self, match, timeout=5.0):
        """The first frame to cross the tap (either way, since it was made
        or last read) for which match(frame) holds; None if none did
        within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                frame = self.sock.recv(65536)
            except TimeoutError:
                return None
            if match(frame):
                return frame
        return None

    def close(self):
        self.sock.close()
        subprocess.run(["ip", "link", "del", self.name], check=False)
