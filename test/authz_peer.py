#!/usr/bin/env python3
"""TCP peers for the authorization tests, each from a chosen source address.

  authz_peer.py serve ADDR PORT           accept, keep every connection open, answer each line with it
  authz_peer.py connect SRC DST PORT      connect from SRC, send a line, print "answered" or the error
                                          and how long the connect took in ms ("refused 3")
  authz_peer.py hold SRC DST PORT SECONDS connect, then wait up to SECONDS for the peer to close it;
                                          prints "held" once connected, then "closed after N ms" or
                                          "still open"
  authz_peer.py probe SRC DST PORT STOP   connect again and again until the file STOP exists; prints how
                                          many were answered and refused
"""
import errno
import os
import socket
import sys
import threading
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve(addr, port):
    server = socket.socket(family(addr), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((addr, int(port)))
    server.listen(128)

    def talk(conn):
        with conn:
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:  # reset, or closed under it (a policy change): the client sees that
                return

    while True:
        conn, _ = server.accept()
        threading.Thread(target=talk, args=(conn,), daemon=True).start()


def open_from(src, dst, port, timeout=5):
    sock = socket.socket(family(dst), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((src, 0))
    started = time.monotonic()
    try:
        sock.connect((dst, int(port)))
        sock.sendall(b"hello\n")
        if not sock.recv(64):
            raise ConnectionResetError(errno.ECONNRESET, "closed")
    except OSError as err:
        sock.close()
        kind = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}.get(err.errno, "error")
        if isinstance(err, socket.timeout):
            kind = "timeout"
        return None, "%s %d" % (kind, (time.monotonic() - started) * 1000)
    return sock, "answered %d" % ((time.monotonic() - started) * 1000)


def connect(src, dst, port):
    sock, outcome = open_from(src, dst, port)
    if sock:
        sock.close()
    print(outcome)


def hold(src, dst, port, seconds):
    sock, outcome = open_from(src, dst, port)
    if not sock:
        print(outcome)
        return 1
    print("held", flush=True)
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < float(seconds):
        try:
            sock.sendall(b"ping\n")
            if not sock.recv(64):
                break
        except socket.timeout:
            continue
        except OSError:
            break
        time.sleep(0.05)
    else:
        print("still open", flush=True)
        return 0
    print("closed after %d ms" % ((time.monotonic() - started) * 1000), flush=True)
    return 0


def probe(src, dst, port, stop):
    answered = refused = 0
    while not os.path.exists(stop):
        sock, outcome = open_from(src, dst, port, timeout=2)
        if sock:
            sock.close()
            answered += 1
        else:
            refused += 1
        time.sleep(0.01)
    print("answered %d refused %d" % (answered, refused))


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    sys.exit({"serve": serve, "connect": connect, "hold": hold, "probe": probe}[verb](*args) or 0)
