"""What a guest test needs from the machine, and what happens without it:
a developer's run skips the test and says why; under CI=true nothing is
skipped, and the missing piece fails the test with the same reason."""

import os

from guest import FULL_BINARY
from qemu import unavailable

NEEDS = {
    "needs_tap": (lambda: os.geteuid() == 0 and os.path.exists("/dev/net/tun"),
                  "a tap device needs root and /dev/net/tun"),
    "needs_full": (lambda: os.access(FULL_BINARY, os.X_OK),
                   "the full build is missing (scripts/build-qemu.sh --full)"),
}


def pytest_configure(config):
    for name, (_, reason) in NEEDS.items():
        config.addinivalue_line("markers", f"{name}: {reason}")


def pytest_runtest_setup(item):
    for name, (present, reason) in NEEDS.items():
        if item.get_closest_marker(name) and not present():
            unavailable(reason)
