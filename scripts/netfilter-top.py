#!/usr/bin/env python3
"""Live view of QEMU's network filter and colo-compare statistics, like top.

    netfilter-top.py QMP_SOCKET [--interval S] [--count N | --once] [--json]
                     [--prometheus FILE] [--timeout S]

Every interval it reads QMP `query-stats` (target netfilter; types and units
from `query-stats-schemas`) and `query-netfilter-stats` (each filter's netdev
and type), and shows every counter with its rate per second, and for each
log2 histogram (colo-compare's release-latency, the holds' hold-time,
filter-buffer's delay) how many events it counted and their p50, p99 and
max. A QEMU whose query-stats has no netfilter target is read through
query-netfilter-stats alone. --json prints one JSON object per refresh and
line; --prometheus FILE rewrites FILE (atomically) for node_exporter's
textfile collector, a histogram as a Prometheus histogram in seconds.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field

try:
    from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, QMPClient, StateError
except ImportError:
    sys.exit("netfilter-top: needs the qemu.qmp package: python3 -m pip install 'qemu.qmp==0.0.6'")


class Fatal(Exception):
    """An error to report in one line, without a traceback."""


@dataclass
class Obj:
    """One filter or colo-compare instance, as read in one refresh."""
    provider: str       # "netfilter" or "colo-compare"
    qom_path: str
    kind: str | None    # filter type, or "colo-compare"
    netdev: str | None
    values: dict        # stat name -> integer, as QEMU reports it
    schema: dict        # stat name -> query-stats-schemas entry
    histograms: dict = field(default_factory=dict)  # stat name -> its buckets
    rates: dict = field(default_factory=dict)  # cumulative stat -> per second or None

    @property
    def name(self):
        return self.qom_path.rsplit("/", 1)[-1]

    def to_json(self):
        out = {"name": self.name, "qom-path": self.qom_path, "kind": self.kind}
        if self.provider == "netfilter":
            out["netdev"] = self.netdev
        histograms = {}
        for name, buckets in self.histograms.items():
            stats = summary(buckets, self.schema.get(name, {}))
            # JSON has no infinity: the last bucket's bound, as Prometheus writes it
            histograms[name] = {"buckets": buckets} | {
                k: "+Inf" if isinstance(v, float) and math.isinf(v) else v
                for k, v in stats.items()}
        return out | {"values": self.values, "rates": self.rates, "histograms": histograms}


def fallback_values(f):
    """query-netfilter-stats' counts of one filter, under their query-stats names."""
    values = {k: f[k] for k in ("packets-tx", "packets-rx", "bytes-tx", "bytes-rx")}
    for c in f.get("counters", []):
        values[f"{c['name']}-packets"] = c["packets"]
        values[f"{c['name']}-bytes"] = c["bytes"]
    return values


def fallback_schema(values):
    # query-netfilter-stats only has totals, all cumulative.
    return {name: {"name": name, "type": "cumulative", "exponent": 0}
            | ({"unit": "bytes"} if "bytes" in name.split("-") else {})
            for name in values}


class Source:
    """Reads every filter and colo-compare instance over one QMP connection."""

    def __init__(self, qmp, timeout):
        self.qmp, self.timeout = qmp, timeout
        self.name = "query-stats"
        self.schemas = {}  # provider -> stat name -> schema

    async def execute(self, cmd, arguments=None):
        try:
            return await asyncio.wait_for(self.qmp.execute(cmd, arguments), self.timeout)
        except (ExecInterruptedError, StateError):
            raise Fatal("QEMU closed the QMP connection") from None
        except TimeoutError:
            raise Fatal(f"QEMU did not answer {cmd} within {self.timeout:g} s") from None

    async def probe(self):
        try:
            await self.execute("query-stats", {"target": "netfilter"})
        except ExecuteError:
            self.name = "query-netfilter-stats"
            return
        for entry in await self.execute("query-stats-schemas"):
            if entry.get("target") == "netfilter":
                self.schemas[entry["provider"]] = {s["name"]: s for s in entry["stats"]}

    async def sample(self):
        if self.name == "query-netfilter-stats":
            objs = []
            for f in await self.execute("query-netfilter-stats"):
                values = fallback_values(f)
                objs.append(Obj("netfilter", f"/objects/{f['name']}", f["type"], f["netdev"],
                                values, fallback_schema(values)))
            return objs
        stats = await self.execute("query-stats", {"target": "netfilter"})
        filters = {f["name"]: f for f in await self.execute("query-netfilter-stats")}
        objs = []
        for entry in stats:
            provider, path = entry["provider"], entry["qom-path"]
            values = {s["name"]: s["value"] for s in entry["stats"] if isinstance(s["value"], int)}
            histograms = {s["name"]: s["value"] for s in entry["stats"]
                          if isinstance(s["value"], list)}
            f = filters.get(path.rsplit("/", 1)[-1], {}) if provider == "netfilter" else {}
            kind = f.get("type") if provider == "netfilter" else provider
            objs.append(Obj(provider, path, kind, f.get("netdev"), values,
                            self.schemas.get(provider, {}), histograms))
        return objs


def bucket_bounds(buckets, schema):
    """The largest value each bucket of a log2 histogram holds, in the
    stat's base unit (QEMU's log2-histogram of integers: bucket 0 holds 0,
    bucket i holds [2^(i-1), 2^i - 1]); the last bucket has no bound."""
    return [in_base_unit(2 ** i - 1, schema) for i in range(len(buckets) - 1)] + [math.inf]


def quantile(buckets, schema, q):
    """At most what the q-quantile of the events is (the bound of its
    bucket), in the base unit; None with no events."""
    count = sum(buckets)
    if not count:
        return None
    rank, seen = math.ceil(q * count), 0
    for n, bound in zip(buckets, bucket_bounds(buckets, schema)):
        seen += n
        if seen >= rank:
            return bound
    raise AssertionError("unreachable")


def summary(buckets, schema):
    """count, and p50, p99 and max (at most, in the base unit) of a histogram."""
    return {"count": sum(buckets), "p50": quantile(buckets, schema, 0.5),
            "p99": quantile(buckets, schema, 0.99), "max": quantile(buckets, schema, 1.0)}


def is_cumulative(obj, stat_name):
    return obj.schema.get(stat_name, {}).get("type") == "cumulative"


def add_rates(objs, previous, seconds):
    """Rates of the cumulative stats since the previous refresh; None for an
    object that is new, or was re-created under the same path (a counter
    went back)."""
    before = {(o.provider, o.qom_path): o for o in previous}
    for obj in objs:
        old = before.get((obj.provider, obj.qom_path))
        cumulative = [n for n in obj.values if is_cumulative(obj, n)]
        if old is not None and any(obj.values[n] < old.values.get(n, 0) for n in cumulative):
            old = None
        obj.rates = {n: (obj.values[n] - old.values[n]) / seconds
                     if old is not None and n in old.values else None
                     for n in cumulative}


def in_base_unit(value, schema):
    """value in the stat's unit without its exponent (e.g. µs -> s)."""
    base, exponent = schema.get("base", 10), schema.get("exponent", 0)
    if exponent >= 0:
        return value * base ** exponent
    return value / base ** -exponent


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if math.isinf(x):
        return "inf"
    return f"{x:.1f}" if x == 0 or abs(x) >= 1 else f"{x:.3g}"


def table(objs, header):
    rows = [("ID", "KIND", "NETDEV", "STAT", "VALUE", "UNIT", "RATE/s")]
    for obj in objs:
        stats = []  # (stat, value, unit, rate), each in its base unit
        for name, value in obj.values.items():
            schema = obj.schema.get(name, {})
            rate = obj.rates.get(name)
            if name not in obj.rates:
                rate_text = ""
            else:
                rate_text = "-" if rate is None else fmt(in_base_unit(rate, schema))
            stats.append((name, fmt(in_base_unit(value, schema)), schema.get("unit", ""), rate_text))
        for name, buckets in obj.histograms.items():
            schema = obj.schema.get(name, {})
            s = summary(buckets, schema)
            stats.append((f"{name} count", str(s["count"]), "", ""))
            stats += [(f"{name} {p} <=", fmt(s[p]), schema.get("unit", ""), "")
                      for p in ("p50", "p99", "max")]
        ident = (obj.name, obj.kind or "?", obj.netdev or "")
        rows += [(ident if i == 0 else ("", "", "")) + stat for i, stat in enumerate(stats)]
    if len(rows) == 1:
        return f"{header}\n(no network filters or colo-compare objects)\n"
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {4, 6}  # numbers
    lines = ["  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    return header + "\n" + "\n".join(lines) + "\n"


def metric(obj, stat_name):
    """Prometheus name and type of one stat, after the naming conventions."""
    schema = obj.schema.get(stat_name, {})
    name = "qemu_" + re.sub(r"[^a-zA-Z0-9]", "_", f"{obj.provider}_{stat_name}")
    unit = schema.get("unit")
    if unit in ("bytes", "seconds") and unit not in name.split("_"):
        name += "_" + unit
    if schema.get("type") == "cumulative":
        return name + "_total", "counter"
    return name, "gauge"


def label_value(text):
    return text.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def prometheus(objs):
    families = {}  # metric name -> its lines; a family's samples stay together

    def family(name, metric_type, stat_name, provider):
        return families.setdefault(name, [
            f"# HELP {name} QEMU {provider} statistic {stat_name}",
            f"# TYPE {name} {metric_type}"])

    for obj in objs:
        labels = {"id": obj.name}
        if obj.provider == "netfilter":
            labels |= {"type": obj.kind, "netdev": obj.netdev}
        label_text = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items() if v is not None)
        sums = {f"{h}-sum" for h in obj.histograms}
        for stat_name, value in obj.values.items():
            if stat_name in sums:
                continue  # the _sum of its histogram
            name, metric_type = metric(obj, stat_name)
            family(name, metric_type, stat_name, obj.provider).append(
                f"{name}{{{label_text}}} {in_base_unit(value, obj.schema.get(stat_name, {}))}")
        for stat_name, buckets in obj.histograms.items():
            buckets = buckets or [0]  # a histogram has its +Inf bucket
            schema = obj.schema.get(stat_name, {})
            name, _ = metric(obj, stat_name)
            lines = family(name, "histogram", stat_name, obj.provider)
            cumulative = 0
            for n, bound in zip(buckets, bucket_bounds(buckets, schema)):
                cumulative += n
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                lines.append(f'{name}_bucket{{{label_text},le="{le}"}} {cumulative}')
            total = obj.values.get(f"{stat_name}-sum", 0)
            lines.append(f"{name}_sum{{{label_text}}} {in_base_unit(total, schema)}")
            lines.append(f"{name}_count{{{label_text}}} {cumulative}")
    return "".join(line + "\n" for lines in families.values() for line in lines)


def write_atomically(path, text):
    """Replace path with text in one rename: a reader never sees half a file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                   prefix=".netfilter-top-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise Fatal(f"cannot write {path}: {e.strerror}") from None


def check_socket(path):
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise Fatal(f"{path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise Fatal(f"{path}: not a socket (give the path of QEMU's -qmp unix socket)")


async def connect(qmp, path, timeout):
    try:
        await asyncio.wait_for(qmp.connect(path), timeout)
    except TimeoutError:
        raise Fatal(f"{path}: no QMP greeting within {timeout:g} s (not a QMP socket, or another "
                    "client holds it: QEMU serves one client at a time per QMP socket)") from None
    except ConnectError as e:
        cause = e.exc
        if isinstance(cause, ConnectionRefusedError):
            why = "connection refused (is QEMU still running?)"
        elif isinstance(cause, OSError):
            why = cause.strerror or str(cause)
        elif isinstance(cause, EOFError):
            why = "closed the connection before the QMP greeting"
        else:
            why = f"does not speak QMP ({str(cause).splitlines()[0]})"
        raise Fatal(f"{path}: {why}") from None


async def run(args):
    check_socket(args.socket)
    qmp = QMPClient("netfilter-top")
    try:
        await connect(qmp, args.socket, args.timeout)
        source = Source(qmp, args.timeout)
        await source.probe()
        tty = sys.stdout.isatty()
        previous, previous_at = [], None
        next_at = time.monotonic()
        refreshes = 0
        while True:
            sampled_at, timestamp = time.monotonic(), time.time()
            objs = await source.sample()
            add_rates(objs, previous, sampled_at - previous_at if previous else None)
            if args.prometheus:
                write_atomically(args.prometheus, prometheus(objs))
            if args.json:
                print(json.dumps({"timestamp": round(timestamp, 3), "source": source.name,
                                  "objects": [o.to_json() for o in objs]}), flush=True)
            else:
                header = (f"netfilter-top  {args.socket}  {time.strftime('%H:%M:%S')}"
                          f"  every {args.interval:g} s  via {source.name}")
                # Like top on a terminal; elsewhere, one table after the other.
                print(("\x1b[H\x1b[2J" if tty else "" if refreshes == 0 else "\n")
                      + table(objs, header), end="", flush=True)
            refreshes += 1
            if refreshes == args.count:
                return
            previous, previous_at = objs, sampled_at
            next_at = max(next_at + args.interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
    finally:
        # After QEMU went away, disconnect() re-raises why: already reported.
        with contextlib.suppress(Exception):
            await qmp.disconnect()


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text}")
        return value
    return parse


def parse_args():
    p = argparse.ArgumentParser(
        description="Live view of QEMU's network filter and colo-compare statistics over QMP.")
    p.add_argument("socket", metavar="QMP_SOCKET_PATH", help="QEMU's QMP unix socket")
    p.add_argument("--interval", type=positive(float), default=1.0, metavar="SECONDS",
                   help="time between refreshes (default 1)")
    p.add_argument("--count", type=positive(int), metavar="N", help="stop after N refreshes")
    p.add_argument("--once", dest="count", action="store_const", const=1, help="same as --count 1")
    p.add_argument("--json", action="store_true", help="one JSON object per refresh and line")
    p.add_argument("--prometheus", metavar="FILE",
                   help="also write FILE, in Prometheus text format, at every refresh")
    p.add_argument("--timeout", type=positive(float), default=5.0, metavar="SECONDS",
                   help="longest wait for the QMP greeting and each reply (default 5)")
    return p.parse_args()


def main():
    args = parse_args()
    try:
        asyncio.run(run(args))
    except Fatal as e:
        sys.exit(f"netfilter-top: {e}")
    except ExecuteError as e:
        sys.exit(f"netfilter-top: {e.sent['execute']}: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Whoever read stdout stopped (e.g. `| head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
