#!/usr/bin/env python3
"""deploy/'s Kubernetes manifests against the agent they deploy, no cluster needed. Prints TAP.

Every manifest parses; the agent container runs 'sockmesh run' with only options its --help lists; the
readiness probe asks /healthz/ready at the port of the admin address passed, which is not loopback; the
paths mounted are the agent's defaults (root cert, token, pin dir, the lock dir of datapath/datapath.h)
from the right sources; the RBAC rules are exactly pods get/list/watch/patch and namespaces
get/list/watch; no hostNetwork, no hostPID, every taint tolerated, system-node-critical, the node
identity variables the agent reads, and the image tagged with the agent's version.
Usage: deploy_manifests.py BUILD_DIR SOURCE_DIR
"""
import glob
import os
import posixpath
import re
import subprocess
import sys

import yaml

build, source = sys.argv[1], sys.argv[2]
sockmesh = os.path.join(build, "agent", "sockmesh")
results = []


def check(name, problems):
    """problems: a list of strings, empty when the check passes."""
    results.append((name, problems))


def run_help():
    """'sockmesh run --help': {option: (takes_value, text)} and the whole text."""
    text = subprocess.run([sockmesh, "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    options, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+(--[a-z][a-z0-9-]*)( [A-Z][A-Z:=]*)?\s", line + " ")
        if m:
            current = m.group(1)
            options[current] = (m.group(2) is not None, line)
        elif current and re.match(r"\s{10,}\S", line):
            options[current] = (options[current][0], options[current][1] + " " + line.strip())
        else:
            current = None
    return options, text


def default_of(options, option):
    m = re.search(r"default[^/0-9]*?([/0-9][^\s;)]*)", options[option][1])
    return m.group(1) if m else None


def load():
    docs, problems = [], []
    files = sorted(glob.glob(os.path.join(source, "deploy", "*.yaml")))
    if not files:
        problems.append("no deploy/*.yaml")
    for path in files:
        try:
            with open(path) as f:
                for doc in yaml.safe_load_all(f):
                    if doc is None:
                        continue
                    if not all(k in doc for k in ("apiVersion", "kind", "metadata")):
                        problems.append(f"{path}: a document without apiVersion, kind or metadata")
                    else:
                        docs.append(doc)
        except yaml.YAMLError as e:
            problems.append(f"{path}: {e}")
    return docs, problems


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    return found[0] if len(found) == 1 else None


def mount_for(path, container, volumes):
    """The volumeMount whose mountPath holds path (the deepest one), and its volume."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return (best, volumes.get(best["name"])) if best else (None, None)


def main():
    options, help_text = run_help()
    docs, problems = load()
    check("every manifest in deploy/ parses", problems)

    ns = one(docs, "Namespace")
    sa, role, binding, ds = (one(docs, k) for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"))
    problems = [f"not exactly one {k}" for k, d in (("Namespace", ns), ("ServiceAccount", sa), ("ClusterRole", role),
                                                    ("ClusterRoleBinding", binding), ("DaemonSet", ds)) if d is None]
    if ns and ns["metadata"]["name"] != "sockmesh-system":
        problems.append(f"the namespace is {ns['metadata']['name']}")
    for d in docs:
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding") and \
                d["metadata"].get("namespace") != "sockmesh-system":
            problems.append(f"{d['kind']} {d['metadata']['name']} is not in sockmesh-system")
    check("one namespace sockmesh-system, one of each object, all in it", problems)
    if problems:
        return

    rules = {}
    problems = []
    for r in role.get("rules", []):
        for group in r.get("apiGroups", []):
            for res in r.get("resources", []):
                rules.setdefault((group, res), set()).update(r.get("verbs", []))
        if set(r) - {"apiGroups", "resources", "verbs"}:
            problems.append(f"a rule with {sorted(set(r) - {'apiGroups', 'resources', 'verbs'})}")
    want = {("", "pods"): {"get", "list", "watch", "patch"}, ("", "namespaces"): {"get", "list", "watch"}}
    if rules != want:
        problems.append(f"rules {rules}, want {want}")
    ref, subjects = binding["roleRef"], binding["subjects"]
    if ref != {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}:
        problems.append(f"the binding refers to {ref}")
    if subjects != [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "sockmesh-system"}]:
        problems.append(f"the binding's subjects are {subjects}")
    check("RBAC: pods get/list/watch/patch, namespaces get/list/watch, nothing else, bound to the agent's account",
          problems)

    spec = ds["spec"]["template"]["spec"]
    problems = []
    for field, value in (("hostNetwork", False), ("hostPID", False), ("priorityClassName", "system-node-critical"),
                         ("serviceAccountName", sa["metadata"]["name"])):
        if spec.get(field) is not value and spec.get(field) != value:
            problems.append(f"{field} is {spec.get(field)!r}, want {value!r}")
    if spec.get("tolerations") != [{"operator": "Exists"}]:
        problems.append(f"tolerations {spec.get('tolerations')}, want [{{operator: Exists}}]")
    if ds["spec"].get("updateStrategy", {}).get("type") != "RollingUpdate":
        problems.append("updateStrategy is not RollingUpdate")
    labels = ds["spec"]["template"]["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in ds["spec"]["selector"]["matchLabels"].items()):
        problems.append("the selector does not match the pod template's labels")
    check("DaemonSet: no hostNetwork, no hostPID, every taint tolerated, system-node-critical, rolling updates",
          problems)

    agents = [c for c in spec["containers"] if posixpath.basename((c.get("command") or [""])[0]) == "sockmesh"]
    if len(agents) != 1:
        check("one container runs sockmesh", [f"{len(agents)} do"])
        return
    agent = agents[0]
    args = agent.get("args", [])
    problems, given = [], {}
    if args[:1] != ["run"]:
        problems.append(f"args start {args[:1]}, not run")
    i = 1
    while i < len(args):
        name = args[i].split("=", 1)[0]
        if name not in options:
            problems.append(f"{args[i]} is not an option of 'sockmesh run --help'")
            i += 1
            continue
        if "=" in args[i]:
            given[name] = args[i].split("=", 1)[1]
        elif options[name][0]:
            if i + 1 >= len(args):
                problems.append(f"{name} lacks its value")
            else:
                given[name] = args[i + 1]
                i += 1
        else:
            given[name] = True
        i += 1
    if "--cgroup" not in given:
        problems.append("--cgroup (required) is not passed")
    if agent.get("securityContext", {}).get("privileged") is not True:
        problems.append("the agent is not privileged")
    check("the agent runs 'sockmesh run' with only options its --help lists", problems)

    problems = []
    admin = given.get("--admin-address", default_of(options, "--admin-address"))
    host, _, port = admin.rpartition(":")
    probe = agent.get("readinessProbe", {}).get("httpGet", {})
    if host.startswith("127.") or host in ("[::1]", "localhost"):
        problems.append(f"the admin address {admin} is loopback: the kubelet cannot reach it")
    if probe.get("path") != "/healthz/ready" or "/healthz/ready" not in help_text:
        problems.append(f"the probe asks {probe.get('path')}, the agent serves /healthz/ready")
    if str(probe.get("port")) != port:
        problems.append(f"the probe asks port {probe.get('port')}, the admin address is {admin}")
    check("readiness probe: /healthz/ready at the admin address passed", problems)

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    problems = []
    used = {m["name"] for c in spec["containers"] + spec.get("initContainers", []) for m in c.get("volumeMounts", [])}
    problems += [f"volumeMount {n} has no volume" for n in used - set(volumes)]
    problems += [f"volume {n} is not mounted" for n in set(volumes) - used]

    def host_path_of(path):
        m, v = mount_for(path, agent, volumes)
        return (m, (v or {}).get("hostPath", {}).get("path"))

    root_cert = given.get("--xds-root-cert", default_of(options, "--xds-root-cert"))
    m, v = mount_for(root_cert, agent, volumes)
    if not v or v.get("configMap", {}).get("name") != "istio-ca-root-cert" or \
            posixpath.relpath(root_cert, m["mountPath"]) != "root-cert.pem":
        problems.append(f"{root_cert} is not root-cert.pem of ConfigMap istio-ca-root-cert")
    token = given.get("--xds-token", default_of(options, "--xds-token"))
    m, v = mount_for(token, agent, volumes)
    sources = (v or {}).get("projected", {}).get("sources", [])
    tokens = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    if not tokens or tokens[0].get("audience") != "istio-ca" or \
            posixpath.relpath(token, m["mountPath"]) != tokens[0].get("path"):
        problems.append(f"{token} is not a projected token with audience istio-ca")
    pin_dir = given.get("--pin-dir", default_of(options, "--pin-dir"))
    m, hp = host_path_of(pin_dir)
    if hp != "/sys/fs/bpf" or m.get("mountPropagation") != "Bidirectional" or m["mountPath"] != "/sys/fs/bpf":
        problems.append(f"the pin dir {pin_dir} is not in the host's /sys/fs/bpf at /sys/fs/bpf, Bidirectional")
    with open(os.path.join(source, "datapath", "datapath.h")) as f:
        lock_dir = re.search(r'#define SM_LOCK_DIR "([^"]+)"', f.read()).group(1)
    m, hp = host_path_of(lock_dir)
    if hp not in ("/var/run/sockmesh", "/run/sockmesh") or m["mountPath"] != lock_dir:
        problems.append(f"the lock dir {lock_dir} is not the host's /var/run/sockmesh")
    m, hp = host_path_of(given["--cgroup"])
    if hp != "/sys/fs/cgroup":
        problems.append(f"--cgroup {given['--cgroup']} is not in the host's /sys/fs/cgroup")
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    for need in ("/proc", "/opt/cni/bin", "/etc/cni/net.d"):
        if need not in host_paths:
            problems.append(f"the host's {need} is not mounted")
    proc_root = given.get("--proc-root", default_of(options, "--proc-root"))
    m, hp = host_path_of(proc_root)
    if not m or hp != "/proc" or m["mountPath"] != proc_root:
        problems.append(f"--proc-root {proc_root} is not the host's /proc")
    cni_socket = given.get("--cni-socket", default_of(options, "--cni-socket"))
    m, hp = host_path_of(cni_socket)
    if not m or hp not in ("/var/run/sockmesh", "/run/sockmesh") or posixpath.dirname(cni_socket) != m["mountPath"] or \
            posixpath.basename(cni_socket) != "cni.sock":
        problems.append(f"--cni-socket {cni_socket} is not cni.sock in the host's /var/run/sockmesh (sockmesh-cni's default)")
    # sockmesh-cni is installed only when --cni-conf-dir is passed: into the host's folders, writable
    for option, host in (("--cni-conf-dir", "/etc/cni/net.d"), ("--cni-bin-dir", "/opt/cni/bin")):
        path = given.get(option, default_of(options, option) if option != "--cni-conf-dir" else None)
        m, hp = host_path_of(path) if path else (None, None)
        if hp != host or m["mountPath"].rstrip("/") != path.rstrip("/") or m.get("readOnly"):
            problems.append(f"{option} {path} is not the host's {host}, writable")
    check("mounts: root cert, token, pin dir, lock dir, cgroup2 root, /proc and the CNI folders passed", problems)

    problems = []
    env = {e["name"]: e for e in agent.get("env", [])}
    for name, field in (("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"),
                        ("POD_NAMESPACE", "metadata.namespace"), ("INSTANCE_IP", "status.podIP"), ("CLUSTER_ID", None)):
        if name not in help_text:
            problems.append(f"'sockmesh run --help' does not name {name}")
        e = env.get(name)
        got = e and (e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") if field else e.get("value"))
        if not got or (field and got != field):
            problems.append(f"{name} is {e}, want {field or 'a value'}")
    with open(os.path.join(source, "docs", "kubernetes.md")) as f:
        settings = f.read()
    for name in env:
        if f"`{name}`" not in settings:
            problems.append(f"{name} is set but docs/kubernetes.md does not name it")
    tunables = env.get("GLIBC_TUNABLES", {}).get("value", "")
    if "glibc.malloc.hugetlb=1" not in tunables.split(":"):
        problems.append(f"GLIBC_TUNABLES is '{tunables}', want glibc.malloc.hugetlb=1 (malloc on transparent huge pages)")
    version = subprocess.run([sockmesh, "--version"], capture_output=True, text=True, timeout=30).stdout.split()[-1]
    for c in spec["containers"] + spec.get("initContainers", []):
        if c["image"].rpartition(":")[2] != version:
            problems.append(f"{c['name']}'s image {c['image']} is not tagged {version}")
    check("node identity variables as ztunnel's chart sets them, malloc on huge pages, every variable documented; "
          "the image tagged with the agent's version", problems)

    problems = []
    resources = agent.get("resources", {})
    for key, value in resources.get("requests", {}).items():
        if f"`{key}: {value}`" not in settings:
            problems.append(f"the agent requests {key} {value}, which docs/kubernetes.md does not say")
    if resources.get("limits"):
        problems.append(f"the agent has limits {resources['limits']}; docs/kubernetes.md says it has none, and why")
    if "`resources.requests`" not in settings:
        problems.append("docs/kubernetes.md's settings table has no `resources.requests` row")
    check("the agent's resource requests as docs/kubernetes.md gives them, and no limits", problems)


if __name__ == "__main__":
    main()
    for number, (name, problems) in enumerate(results, 1):
        for problem in problems:
            print(f"# {problem}")
        print(f"{'not ok' if problems else 'ok'} {number} - {name}")
    print(f"1..{len(results)}")
