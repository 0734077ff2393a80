#!/usr/bin/env python3
"""TCP peers and readers for the telemetry end-to-end test (test/e2e_telemetry.sh).

The exchange: a client sends N bytes in all, starting with a 16-byte header "%07d %07d\\n" (N, M); the
server reads them, sends M bytes back, and closes once the client has closed. Both know N and M, so
nothing depends on a half-close.

  tel_peer.py serve ADDR PORT [TLVFILE]      serve exchanges; with TLVFILE (a waypoint), each connection
                                             first strips the original-destination TLV and appends
                                             "IP PORT" to TLVFILE
  tel_peer.py talk SRC DST PORT N M [SYNCNT] one exchange from SRC: "done sent N received M", or how it
                                             failed ("refused", "timeout", "reset", "error ...")
  tel_peer.py long SRC DST PORT N M STOP     one exchange whose N bytes go in 10 parts over 4.5 s
                                             ("sending" after the first), then "exchanged"; keeps the
                                             connection open until the file STOP exists (at most 60 s)
  tel_peer.py burst SRCFILE DST PORT N M     one exchange from each address of SRCFILE, 32 at a time:
                                             "done D failed F"
  tel_peer.py expect URL NAME VALUE K=V...   the one series of NAME whose labels include every K=V has
                                             the value VALUE, or more with ">VALUE" (else prints what
                                             there is); V ending in "*" is a prefix, "*" alone any
                                             non-empty value
  tel_peer.py labels URL                     every istio_tcp_* family is a counter with HELP, and every
                                             series has ztunnel's labels in ztunnel's order
  tel_peer.py count URL [K=V...]             the number of istio_tcp_* series (with every K=V; the
                                             name is __name__)
  tel_peer.py log FILE K=V...                exactly one access-log line ("connection complete", plain
                                             k=v or JSON) has every K=V
  tel_peer.py query URL PROMQL K=V...        Prometheus' /api/v1/query returns a series with every K=V
"""
import ipaddress
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HEADER = 16
TCP_SYNCNT = 7

# ztunnel's CommonTrafficLabels, in order (src/proxy/metrics.rs); the locality group is optional.
LABELS = [
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_service", "destination_service_namespace", "destination_service_name",
    "destination_workload", "destination_canonical_service", "destination_canonical_revision",
    "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
    "destination_cluster", "request_protocol", "response_flags", "connection_security_policy",
]
LOCALITY = ["source_region", "source_zone", "destination_region", "destination_zone"]
FAMILIES = ["istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
            "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total",
            "istio_tcp_connections_failed_total"]


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def read_exactly(conn, n):
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(min(65536, n - len(data)))
        if not chunk:
            raise ConnectionResetError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return bytes(data)


def strip_tlv(conn):
    """The waypoint's side of docs/wire.md: type 1, length, address and port, then the end marker."""
    kind, length = struct.unpack("!BI", read_exactly(conn, 5))
    value = read_exactly(conn, length)
    end, end_length = struct.unpack("!BI", read_exactly(conn, 5))
    if kind != 1 or end != 0xFE or end_length != 0 or length not in (6, 18):
        raise ValueError("not an original-destination TLV")
    return "%s %d" % (ipaddress.ip_address(value[:-2]), struct.unpack("!H", value[-2:])[0])


def answer(conn, tlv_file):
    with conn:
        try:
            if tlv_file:
                orig = strip_tlv(conn)
                with open(tlv_file, "a") as out:
                    out.write(orig + "\n")
            n, m = (int(x) for x in read_exactly(conn, HEADER).split())
            read_exactly(conn, n - HEADER)
            conn.sendall(b"m" * m)
            while conn.recv(65536):  # until the client closes
                pass
        except (OSError, ValueError):
            return


def serve(addr, port, tlv_file=None):
    server = socket.socket(family(addr), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((addr, int(port)))
    server.listen(512)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=answer, args=(conn, tlv_file), daemon=True).start()


def exchange(src, dst, port, n, m, syncnt=None, parts=1, pause=0.0):
    """Returns the open socket after the exchange (N bytes sent in PARTS, PAUSE s apart), or raises."""
    n, m = int(n), int(m)
    sock = socket.socket(family(dst), socket.SOCK_STREAM)
    sock.settimeout(15)  # longer than the kernel's own SYN timeout with a small TCP_SYNCNT
    if syncnt:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, int(syncnt))
    try:
        sock.bind((src, 0))
        sock.connect((dst, int(port)))
        data = b"%07d %07d\n" % (n, m) + b"n" * (n - HEADER)
        step = -(-n // parts)
        for at in range(0, n, step):
            if at:
                time.sleep(pause)
            sock.sendall(data[at:at + step])
            if not at and parts > 1:
                print("sending", flush=True)
        read_exactly(sock, m)
    except BaseException:
        sock.close()
        raise
    return sock


def outcome(err):
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(err, ConnectionResetError):
        return "reset"
    return "error %s" % err


def talk(src, dst, port, n, m, syncnt=None):
    try:
        exchange(src, dst, port, n, m, syncnt).close()
    except OSError as err:
        print(outcome(err))
        return 1
    print("done sent %s received %s" % (n, m))
    return 0


def long(src, dst, port, n, m, stop):
    try:
        sock = exchange(src, dst, port, n, m, parts=10, pause=0.5)
    except OSError as err:
        print(outcome(err))
        return 1
    print("exchanged", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(stop) and time.monotonic() < deadline:
        time.sleep(0.05)
    sock.close()
    print("closed", flush=True)
    return 0


def burst(src_file, dst, port, n, m):
    with open(src_file) as f:
        sources = f.read().split()

    def one(src):
        try:
            exchange(src, dst, port, n, m).close()
            return True
        except OSError:
            return False

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, sources))
    print("done %d failed %d" % (results.count(True), results.count(False)))
    return 0 if all(results) else 1


# ---- the exposition ----

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(value):
    return re.sub(r'\\(.)', lambda c: "\n" if c.group(1) == "n" else c.group(1), value)


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def series(text):
    """(name, [(label, value)...] in order, value) of every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SERIES.match(line)
        if not match:
            raise ValueError("not a sample line: %r" % line)
        labels = [(k, unescape(v)) for k, v in LABEL.findall(match.group(2) or "")]
        out.append((match.group(1), labels, float(match.group(3))))
    return out


def wanted(pairs):
    return dict(p.split("=", 1) for p in pairs)


def matches(fields, want):
    """Every K=V holds; V ending in "*" is a prefix ("*" alone: any non-empty value)."""
    def one(have, w):
        if w.endswith("*"):
            return have is not None and have != "" and have.startswith(w[:-1])
        return have == w
    return all(one(fields.get(k), w) for k, w in want.items())


def expect(url, name, value, *pairs):
    want = wanted(pairs)
    found = [(labels, v) for n, labels, v in series(fetch(url))
             if n == name and matches(dict(labels), want)]
    if len(found) == 1 and (found[0][1] > float(value[1:]) if value.startswith(">") else found[0][1] == float(value)):
        return 0
    print("want one %s = %s with %s; found %d: %s" % (name, value, want, len(found), found))
    first = dict(list(want.items())[:2])  # near misses: the series of the same reporter and workload
    for n, labels, v in series(fetch(url)):
        if n == name and matches(dict(labels), first):
            print("  have %s %s" % (dict(labels), v))
    return 1


def labels(url):
    text = fetch(url)
    problems = []
    for name in FAMILIES:
        base = name[:-len("_total")]
        if not re.search(r"^# TYPE (%s|%s) counter$" % (name, base), text, re.M):
            problems.append("no '# TYPE %s counter'" % base)
        if not re.search(r"^# HELP (%s|%s) \S" % (name, base), text, re.M):
            problems.append("no '# HELP %s'" % base)
    count = 0
    for name, pairs, _ in series(text):
        if not name.startswith("istio_tcp_"):
            continue
        count += 1
        keys = [k for k, _ in pairs]
        if keys not in (LABELS, LABELS + LOCALITY):
            problems.append("%s: labels %s" % (name, keys))
        values = dict(pairs)
        if values.get("request_protocol") != "tcp" or values.get("connection_security_policy") != "none":
            problems.append("%s: %s" % (name, values))
        if "" in values.values():
            problems.append("%s: an empty value instead of 'unknown': %s" % (name, values))
    if count == 0:
        problems.append("no istio_tcp_* series")
    for p in problems[:10]:
        print(p)
    return 1 if problems else 0


def count(url, *pairs):
    """The istio_tcp_* series, or those whose labels have every K=V (V ending in "*": a prefix)."""
    want = wanted(pairs)
    print(sum(1 for name, labels, _ in series(fetch(url))
              if name.startswith("istio_tcp_") and matches(dict(labels, __name__=name), want)))
    return 0


# ---- the access log ----

PLAIN_FIELD = re.compile(r'([a-zA-Z_.]+)=("(?:[^"\\]|\\.)*"|\S+)')


def flatten(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v if isinstance(v, str) else json.dumps(v)
    return out


def log_lines(path):
    with open(path, errors="replace") as f:
        for line in f:
            if "connection complete" not in line:
                continue
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield line, flatten(json.loads(line))
                except ValueError:
                    continue
            else:
                yield line, {k: unescape(v[1:-1]) if v.startswith('"') else v
                             for k, v in PLAIN_FIELD.findall(line)}


def log(path, *pairs):
    want = wanted(pairs)
    found = [line for line, fields in log_lines(path)
             if matches(fields, want)]
    if len(found) == 1:
        return 0
    print("want one line with %s; found %d" % (want, len(found)))
    first = dict(list(want.items())[:2])
    for line, fields in log_lines(path):
        if matches(fields, first):
            print("  have %s" % line)
    return 1


def query(url, promql, *pairs):
    want = wanted(pairs)
    reply = json.loads(fetch(url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    results = reply.get("data", {}).get("result", [])
    if any(matches(r["metric"], want) for r in results):
        return 0
    print("want %s in %s; got %s" % (want, promql, json.dumps(results)[:2000]))
    return 1


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    verbs = {"serve": serve, "talk": talk, "long": long, "burst": burst, "expect": expect,
             "labels": labels, "count": count, "log": log, "query": query}
    try:
        sys.exit(verbs[verb](*args) or 0)
    except (OSError, ValueError) as err:  # the endpoint is not there, or not Prometheus text
        print("%s: %s" % (verb, err))
        sys.exit(1)
