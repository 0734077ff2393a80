#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A mock Kubernetes API server for k8s/'s tests (stdlib only).

Serves GET /api/v1/pods?fieldSelector=spec.nodeName=NODE and /api/v1/namespaces (list, and watch=1 as
a chunked stream of newline-delimited events from a resourceVersion), and PATCH of a pod with a merge
patch. The test drives it over stdin, one JSON command per line, and reads one JSON answer per line:
  {"op":"put","kind":"pods"|"namespaces","obj":{...}}  add or replace (ADDED/MODIFIED event)
  {"op":"delete","kind":...,"name":..., "silent":false} remove (a DELETED event unless silent)
  {"op":"bookmark"}          a BOOKMARK at a new resourceVersion to every open watch
  {"op":"compact","as_event":false}  forget the history up to now and end every watch: a resume from
                             before answers 410 (HTTP status, or an ERROR event with code 410)
  {"op":"token","value":"T"} the bearer token accepted from now on (401 otherwise)
  {"op":"flap","on":true}   end every watch right after its headers (until "on":false)
  {"op":"close"}             end every open watch (a resume from the last resourceVersion works)
  {"op":"garbage"}           a line of bad JSON to every open watch
  {"op":"requests"}          the requests seen so far
  {"op":"quit"}
It prints {"port": N} when it listens. With --cert/--key it speaks TLS only.
"""
import argparse
import json
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Condition()
state = {
    "rv": 100,          # the cluster-wide resourceVersion counter, as etcd's revision
    "compacted": 0,     # watches from below this answer 410
    "objects": {"pods": {}, "namespaces": {}},
    "log": [],          # (rv, kind, event dict) for watch resumes
    "generation": 0,    # bumped to end every open watch
    "token": None,
    "requests": [],
    "error_as_event": False,
    "flap": False,      # end every watch right after its headers
}
args = None


def key_of(kind, obj):
    meta = obj["metadata"]
    return meta["name"] if kind == "namespaces" else meta["namespace"] + "/" + meta["name"]


def on_node(kind, obj):
    return kind != "pods" or obj.get("spec", {}).get("nodeName") == args.node


def bump():
    state["rv"] += 1
    return str(state["rv"])


def emit(kind, etype, obj):
    state["log"].append((state["rv"], kind, {"type": etype, "object": obj}))
    lock.notify_all()


def command(cmd):
    op = cmd["op"]
    with lock:
        if op == "put":
            kind, obj = cmd["kind"], cmd["obj"]
            key = key_of(kind, obj)
            etype = "MODIFIED" if key in state["objects"][kind] else "ADDED"
            obj["metadata"]["resourceVersion"] = bump()
            state["objects"][kind][key] = obj
            emit(kind, etype, obj)
            return {"rv": obj["metadata"]["resourceVersion"]}
        if op == "delete":
            kind = cmd["kind"]
            obj = state["objects"][kind].pop(cmd["name"])
            obj["metadata"]["resourceVersion"] = bump()
            if not cmd.get("silent"):
                emit(kind, "DELETED", obj)
            return {"rv": obj["metadata"]["resourceVersion"]}
        if op == "bookmark":
            rv = bump()
            for kind in ("pods", "namespaces"):
                emit(kind, "BOOKMARK", {"kind": "Pod" if kind == "pods" else "Namespace",
                                        "apiVersion": "v1", "metadata": {"resourceVersion": rv}})
            return {"rv": rv}
        if op == "compact":
            state["compacted"] = state["rv"]
            state["log"] = []
            state["error_as_event"] = bool(cmd.get("as_event"))
            state["generation"] += 1
            lock.notify_all()
            return {"rv": str(state["rv"])}
        if op == "token":
            state["token"] = cmd["value"]
            return {}
        if op == "flap":
            state["flap"] = bool(cmd["on"])
            return {}
        if op == "close":
            state["generation"] += 1
            lock.notify_all()
            return {}
        if op == "garbage":
            state["log"].append((int(bump()), "*", None))
            lock.notify_all()
            return {}
        if op == "requests":
            return {"requests": state["requests"]}
    return {"error": "unknown op " + op}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def record(self, body=None):
        url = urllib.parse.urlsplit(self.path)
        with lock:
            state["requests"].append({
                "method": self.command, "path": url.path,
                "query": dict(urllib.parse.parse_qsl(url.query)),
                "auth": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            })
        return url.path, dict(urllib.parse.parse_qsl(url.query))

    def answer(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason, message):
        self.answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": message, "reason": reason, "code": code})

    def authorized(self):
        with lock:
            token = state["token"]
        if token is None or self.headers.get("Authorization") == "Bearer " + token:
            return True
        self.status(401, "Unauthorized", "Unauthorized")
        return False

    def do_GET(self):
        path, query = self.record()
        if not self.authorized():
            return
        kind = {"/api/v1/pods": "pods", "/api/v1/namespaces": "namespaces"}.get(path)
        if kind is None:
            return self.status(404, "NotFound", "no such path " + path)
        if kind == "pods" and query.get("fieldSelector") != "spec.nodeName=" + args.node:
            return self.status(400, "BadRequest", "this test expects fieldSelector=spec.nodeName=" + args.node)
        if query.get("watch") in ("1", "true"):
            return self.watch(kind, query)
        with lock:
            items = [o for o in state["objects"][kind].values() if on_node(kind, o)]
            rv = str(state["rv"])
        self.answer(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                          "items": items})

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, kind, query):
        if query.get("allowWatchBookmarks") != "true":
            return self.status(400, "BadRequest", "this test expects allowWatchBookmarks=true")
        pos = int(query.get("resourceVersion", "0"))
        with lock:
            gone = pos < state["compacted"]
            as_event = state["error_as_event"]
            generation = state["generation"]
        if gone and not as_event:
            return self.status(410, "Expired", "too old resource version")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if gone:
                self.chunk(json.dumps({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired", "message": "too old resource version"}}).encode() + b"\n")
                self.chunk(b"")
                return
            with lock:
                if state["flap"]:
                    self.chunk(b"")
                    return
            index = 0
            while True:
                with lock:
                    while True:
                        log = state["log"]
                        pending = []
                        for i in range(index, len(log)):
                            rv, k, ev = log[i]
                            if rv > pos and (k == "*" or (k == kind and (
                                    ev["type"] == "BOOKMARK" or on_node(kind, ev["object"])))):
                                pending.append(ev)
                        index = len(log)
                        ended = state["generation"] != generation
                        if pending or ended:
                            break
                        lock.wait(0.5)
                for ev in pending:
                    self.chunk(b"{not json\n" if ev is None else json.dumps(ev).encode() + b"\n")
                if ended:
                    self.chunk(b"")
                    return
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def do_PATCH(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        path, _ = self.record(body)
        if not self.authorized():
            return
        parts = path.split("/")
        # /api/v1/namespaces/NS/pods/NAME
        if len(parts) != 7 or parts[1:4] != ["api", "v1", "namespaces"] or parts[5] != "pods":
            return self.status(404, "NotFound", "no such path " + path)
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self.status(415, "UnsupportedMediaType", "expects application/merge-patch+json")
        with lock:
            obj = state["objects"]["pods"].get(parts[4] + "/" + parts[6])
            if obj is None:
                return self.status(404, "NotFound", "pods %s not found" % parts[6])
            annotations = obj["metadata"].setdefault("annotations", {})
            for k, v in json.loads(body).get("metadata", {}).get("annotations", {}).items():
                if v is None:
                    annotations.pop(k, None)
                else:
                    annotations[k] = v
            obj["metadata"]["resourceVersion"] = bump()
            emit("pods", "MODIFIED", obj)
        self.answer(200, obj)


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        print(json.dumps(command(cmd)), flush=True)
    with lock:
        state["generation"] += 1
        lock.notify_all()
    server.shutdown()


if __name__ == "__main__":
    main()
