#!/usr/bin/env python3
"""Runs what `helm template` rendered, as Kubernetes would, on one machine.

No API server can run here, so this plays the parts Kubernetes plays, from
the rendered objects only:
  - the key hook: its Job's containers run against an HTTPS stand-in for the
    API server (a self-signed CA as the service account's ca.crt), which keeps
    the Secrets they create; operator-supplied Secrets the chart names but
    does not create are generated with `tributary keys generate`;
  - every pod: its containers' args and env (fieldRefs resolved, $(VAR)
    expanded), its volumes materialized (ConfigMaps, Secrets with items,
    modes and fsGroup, projected sources, emptyDirs as tmpfs of their
    sizeLimit, claims as directories) and mounted at their mountPaths in a
    private mount namespace around a chroot, the root read-only where
    readOnlyRootFilesystem says so, the user, group and capability bounding
    set of its securityContext applied with setpriv;
  - the network: a network namespace per pod (169.254.77.0/24), Services as
    /etc/hosts names.
The controller, one node agent per simulated Kubernetes node, and then the
`helm test` pod run; the test pod's exit code is the verdict.

Usage: run_rendered.py --binary build/tributary --rendered out.yaml [--nodes 2]
Needs root, iproute2, util-linux (unshare, setpriv), openssl.
"""
import argparse
import base64
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import yaml

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
NAMESPACE = "tributary-chart-test"


def log(msg):
    print(f"run-rendered: {msg}", flush=True)


class Network:
    """A namespace per host on a bridge in a namespace of its own (as tests/support/netns.h)."""

    def __init__(self, hosts):
        self.prefix = f"trb{os.getpid()}"
        self.namespaces = []
        self.address = {}
        bridge = f"{self.prefix}-br"
        cmds = [f"ip netns add {bridge}", f"ip -n {bridge} link add br0 type bridge",
                f"ip -n {bridge} link set br0 up"]
        self.namespaces.append(bridge)
        for i, host in enumerate(hosts):
            ns = f"{self.prefix}-{host}"
            self.namespaces.append(ns)
            self.address[host] = f"169.254.77.{10 + i}"
            cmds += [f"ip netns add {ns}", f"ip -n {bridge} link add v{i} type veth peer name eth0 netns {ns}",
                     f"ip -n {bridge} link set v{i} master br0 up", f"ip -n {ns} link set lo up",
                     f"ip -n {ns} addr add {self.address[host]}/24 dev eth0", f"ip -n {ns} link set eth0 up"]
        for c in cmds:
            subprocess.run(c.split(), check=True)

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def remove(self):
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


class FakeApiServer:
    """POST /api/v1/namespaces/NS/secrets over HTTPS: created once, 409 AlreadyExists after."""

    def __init__(self, work):
        self.secrets = {}
        self.token = "chart-test-token"
        key, cert = os.path.join(work, "api.key"), os.path.join(work, "api.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        self.ca = cert
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets", self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self.answer(401, {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"})
                if not m or m.group(1) != NAMESPACE:
                    return self.answer(403, {"kind": "Status", "reason": "Forbidden", "message": "wrong namespace"})
                name = body["metadata"]["name"]
                if name in outer.secrets:
                    return self.answer(409, {"kind": "Status", "reason": "AlreadyExists",
                                             "message": f'secrets "{name}" already exists'})
                outer.secrets[name] = {k: base64.b64decode(v) for k, v in body.get("data", {}).items()}
                self.answer(201, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def service_account(self, work):
        d = os.path.join(work, "serviceaccount")
        os.makedirs(d, exist_ok=True)
        shutil.copy(self.ca, os.path.join(d, "ca.crt"))
        for name, text in (("token", self.token), ("namespace", NAMESPACE)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d


class Cluster:
    def __init__(self, docs, binary, work):
        self.docs = docs
        self.binary = os.path.abspath(binary)
        self.work = work
        self.configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        self.secrets = {}
        self.processes = []
        self.hosts_file = os.path.join(work, "hosts")

    # ---- volumes
    def write_file(self, path, data, mode, gid):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)
        os.chown(path, 0, gid)

    def project(self, into, data, items, mode, gid, what):
        if items is None:
            items = [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise RuntimeError(f"{what} has no key {item['key']}")
            self.write_file(os.path.join(into, item["path"]), data[item["key"]], item.get("mode", mode), gid)

    def secret(self, name):
        if name not in self.secrets:
            raise RuntimeError(f"Secret {name} does not exist (neither the key hook nor the operator made it)")
        return self.secrets[name]

    def materialize(self, pod_name, volume, gid):
        d = os.path.join(self.work, "volumes", pod_name, volume["name"])
        os.makedirs(d, exist_ok=True)
        if "configMap" in volume:
            ref = volume["configMap"]
            self.project(d, self.configmaps[ref["name"]], ref.get("items"), ref.get("defaultMode", 0o644), gid,
                         f"ConfigMap {ref['name']}")
        elif "secret" in volume:
            ref = volume["secret"]
            self.project(d, self.secret(ref["secretName"]), ref.get("items"), ref.get("defaultMode", 0o644), gid,
                         f"Secret {ref['secretName']}")
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"]["sources"]:
                if "configMap" in source:
                    ref = source["configMap"]
                    self.project(d, self.configmaps[ref["name"]], ref.get("items"), mode, gid, f"ConfigMap {ref['name']}")
                elif "secret" in source:
                    ref = source["secret"]
                    self.project(d, self.secret(ref["name"]), ref.get("items"), mode, gid, f"Secret {ref['name']}")
                else:
                    raise RuntimeError(f"unsupported projected source {source}")
        elif "persistentVolumeClaim" in volume or "emptyDir" in volume:
            pass  # a directory, or a tmpfs mounted by the pod's script
        else:
            raise RuntimeError(f"unsupported volume {volume}")
        if gid:
            os.chown(d, 0, gid)
            os.chmod(d, 0o2775)
        return d

    # ---- pods
    def start(self, pod_name, spec, fields, extra_env=None, extra_mounts=(), netns=None, wait=False, timeout=None):
        """Runs the pod's init containers in order, then its first container.

        `fields` answers the env's fieldRefs; `extra_env` is what Kubernetes
        adds itself (the API server's address)."""
        for c in spec.get("initContainers", []):
            rc = self.run_container(pod_name, spec, c, fields, extra_env, extra_mounts, netns, wait=True, timeout=120)
            if rc != 0:
                raise RuntimeError(f"pod {pod_name}: init container {c['name']} exited with {rc}")
        return self.run_container(pod_name, spec, spec["containers"][0], fields, extra_env, extra_mounts, netns,
                                  wait=wait, timeout=timeout)

    def run_container(self, pod_name, spec, c, fields, extra_env, extra_mounts, netns, wait, timeout):
        pod_sc = spec.get("securityContext", {})
        sc = c.get("securityContext", {})
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", 0))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))
        fs_group = pod_sc.get("fsGroup", 0)
        if (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True) and uid == 0:
            raise RuntimeError(f"{pod_name}/{c['name']}: runAsNonRoot with user 0 would not start")
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
            else:
                env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        env.update(extra_env or {})
        args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in c.get("args", [])]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        root = os.path.join(self.work, "roots", f"{pod_name}-{c['name']}")
        os.makedirs(root, exist_ok=True)
        lines = ["set -e", f"R={root}", "mount -t tmpfs -o size=16m,mode=755 tmpfs $R",
                 "for d in usr etc proc sys dev opt/tributary/bin; do mkdir -p $R/$d; done"]
        for top in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):  # merged /usr: symlinks
            if os.path.islink(f"/{top}"):
                lines.append(f"ln -s {os.readlink('/' + top)} $R/{top}")
        lines += ["mount --rbind -o ro /usr $R/usr", "mount --rbind /proc $R/proc", "mount --rbind -o ro /sys $R/sys",
                  "mount --rbind /dev $R/dev",
                  "touch $R/opt/tributary/bin/tributary",
                  f"mount --bind -o ro {self.binary} $R/opt/tributary/bin/tributary",
                  "for f in passwd group nsswitch.conf ld.so.cache; do cp /etc/$f $R/etc/ 2>/dev/null || true; done",
                  f"cp {self.hosts_file} $R/etc/hosts", ": > $R/etc/resolv.conf"]
        mounts = list(c.get("volumeMounts", [])) + list(extra_mounts)
        for m in mounts:
            target = "$R" + m["mountPath"]
            lines.append(f"mkdir -p {target}")
            if "hostDir" in m:
                source = m["hostDir"]
            else:
                v = volumes[m["name"]]
                source = self.materialize(pod_name, v, fs_group)
                if "emptyDir" in v:
                    size = v["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m").replace("Gi", "g")
                    lines.append(f"mount -t tmpfs -o size={size},mode=1777 tmpfs {target}")
                    continue
            ro = ",ro" if m.get("readOnly") else ""
            lines.append(f"mount --bind {source} {target}" + (f" && mount -o remount,bind{ro} {target}" if ro else ""))
        if sc.get("readOnlyRootFilesystem"):
            lines.append("mount -o remount,ro $R")
        caps = [cap.lower() for cap in sc.get("capabilities", {}).get("add", [])]
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            raise RuntimeError(f"{pod_name}/{c['name']}: does not drop ALL")
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        setpriv += [f"--groups={fs_group}"] if fs_group else ["--clear-groups"]
        setpriv += [f"--bounding-set=-all" + "".join(f",+{cap}" for cap in caps), "--inh-caps=-all"]
        if sc.get("allowPrivilegeEscalation") is False:
            setpriv.append("--no-new-privs")
        env_args = " ".join(f"{k}={shquote(v)}" for k, v in sorted(env.items()))
        lines.append(f"cd $R && exec chroot $R env -i PATH=/usr/bin:/bin {env_args} "
                     + " ".join(setpriv) + " /opt/tributary/bin/tributary " + " ".join(shquote(a) for a in args))
        script = os.path.join(self.work, f"{pod_name}-{c['name']}.sh")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        log_path = os.path.join(self.work, f"{pod_name}-{c['name']}.log")
        cmd = (["ip", "netns", "exec", netns] if netns else []) + \
            ["unshare", "--mount", "--propagation", "private", "sh", script]
        out = open(log_path, "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((p, f"{pod_name}/{c['name']}", log_path))
        if not wait:
            return p
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            return "timeout"

    def stop_all(self):
        for p, _, _ in reversed(self.processes):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for p, _, _ in self.processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()


def shquote(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--rendered", required=True)
    ap.add_argument("--nodes", type=int, default=2, help="simulated Kubernetes nodes (each runs every pool's agent)")
    ap.add_argument("--timeout", type=int, default=240)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("run-rendered: needs root (network and mount namespaces)")
        return 77
    docs = [d for d in yaml.safe_load_all(open(a.rendered)) if d]
    work = tempfile.mkdtemp(prefix="tributary-chart-run-")
    os.chmod(work, 0o755)
    node_names = [f"k8s-{chr(97 + i)}" for i in range(a.nodes)]
    daemonsets = [d for d in docs if d["kind"] == "DaemonSet"]
    hosts = ["ctl", "client"] + [f"{n}-{i}" for n in node_names for i in range(len(daemonsets))]
    net = Network(hosts)
    cluster = Cluster(docs, a.binary, work)
    api = FakeApiServer(work)
    try:
        return run(cluster, net, api, node_names, daemonsets, a.timeout)
    finally:
        cluster.stop_all()
        for p, name, path in cluster.processes:
            if p.returncode not in (0, -15, 143, None) or os.environ.get("CHART_TEST_VERBOSE"):
                log(f"--- {name} (exit {p.returncode}), last lines of {path}:")
                with open(path) as f:
                    for line in f.readlines()[-15:]:
                        print("    " + line.rstrip())
        net.remove()
        api.server.shutdown()
        subprocess.run(["rm", "-rf", "--one-file-system", work])


def run(cluster, net, api, node_names, daemonsets, timeout):
    docs = cluster.docs
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    controller_svc = next(n for n in services if n.endswith("-controller"))
    gateway_svc = next(n for n in services if n.endswith("-gateway"))
    with open(cluster.hosts_file, "w") as f:
        f.write(f"127.0.0.1 localhost\n{net.address['ctl']} {controller_svc}\n"
                f"{net.address[f'{node_names[0]}-0']} {gateway_svc}\n")

    # The key hook, exactly as rendered, against the API server stand-in
    # (from the root namespace: it is on loopback).
    hook = next((d for d in docs if d["kind"] == "Job"), None)
    sa_dir = api.service_account(cluster.work)
    if hook:
        api_env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        sa_mount = [{"mountPath": SERVICE_ACCOUNT, "hostDir": sa_dir, "readOnly": True}]
        rc = cluster.start("keys-hook", hook["spec"]["template"]["spec"], {}, api_env, sa_mount, wait=True, timeout=120)
        if rc != 0:
            raise RuntimeError(f"the key hook failed ({rc})")
        created = sorted(api.secrets)
        log(f"key hook created {len(created)} Secrets: {', '.join(created)}")
        # A second run (an upgrade) keeps every key.
        before = {k: dict(v) for k, v in api.secrets.items()}
        if cluster.start("keys-hook-again", hook["spec"]["template"]["spec"], {}, api_env, sa_mount,
                         wait=True, timeout=120) != 0 or api.secrets != before:
            raise RuntimeError("the key hook run again (an upgrade) changed or failed to keep the keys")
        log("key hook run again (an upgrade): every Secret kept as it was")
    cluster.secrets.update(api.secrets)
    provide_operator_secrets(cluster)

    controller = cluster.start("controller", deployment["spec"]["template"]["spec"], {}, netns=net.ns("ctl"))
    for node in node_names:
        for i, ds in enumerate(daemonsets):
            host = f"{node}-{i}"
            ip = net.address[host]
            cluster.start(f"{ds['metadata']['name']}-{node}", ds["spec"]["template"]["spec"],
                          {"spec.nodeName": node, "status.podIP": ip, "status.hostIP": ip}, netns=net.ns(host))
    ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    status_url = f"http://{net.address['ctl']}:{ports['http']}"
    expected = {f"{ds['spec']['template']['metadata']['labels']['tributary.dev/pool']}.{n}"
                for n in node_names for ds in daemonsets}
    deadline = time.time() + 60
    joined = set()
    while time.time() < deadline:
        if controller.poll() is not None:
            raise RuntimeError(f"the controller exited ({controller.returncode})")
        out = subprocess.run(["ip", "netns", "exec", net.ns("client"), cluster.binary, "status", "--json",
                              "--controller", status_url], capture_output=True, text=True)
        if out.returncode == 0:
            status = json.loads(out.stdout)
            joined = {n for n, v in status.get("nodes", {}).items() if v.get("connected")}
            if joined >= expected:
                break
        time.sleep(0.5)
    if not joined >= expected:
        raise RuntimeError(f"node agents joined: {sorted(joined)}, expected {sorted(expected)}")
    log(f"controller ready; node agents joined under their ids: {', '.join(sorted(joined))}")

    test_pod = next(d for d in docs if d["kind"] == "Pod" and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")
    started = time.time()
    rc = cluster.start("helm-test", test_pod["spec"], {}, netns=net.ns("client"), wait=True, timeout=timeout)
    with open(next(path for p, name, path in cluster.processes if name.startswith("helm-test/"))) as f:
        report = f.read()
    for line in report.splitlines():
        if "completed round" in line or "accepted" in line or "tributary:" in line:
            log(f"helm test: {line.strip()}")
    if rc != 0:
        raise RuntimeError(f"the helm test pod failed ({rc})")
    log(f"helm test passed in {time.time() - started:.1f} s: a round completed through the rendered release")
    return 0


def provide_operator_secrets(cluster):
    """The Secrets a values file says the operator made (existingSecret): generated here as an operator would."""
    wanted = {}
    for d in cluster.docs:
        spec = d.get("spec", {}).get("template", {}).get("spec") if d["kind"] != "Pod" else d["spec"]
        for v in (spec or {}).get("volumes", []):
            refs = [v["secret"]["secretName"]] if "secret" in v else \
                [s["secret"]["name"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
            items = [i["key"] for i in v.get("secret", {}).get("items", [])] + \
                [i["key"] for s in v.get("projected", {}).get("sources", []) if "secret" in s for i in s["secret"].get("items", [])]
            for r in refs:
                wanted.setdefault(r, set()).update(items)
    for name, keys in wanted.items():
        if name in cluster.secrets:
            continue
        stems = {k.rsplit(".", 1)[0] for k in keys}
        data = {}
        for stem in stems:
            out = tempfile.mkdtemp(dir=cluster.work)
            subprocess.run([cluster.binary, "keys", "generate", "--name", stem, "--out", out], check=True,
                           capture_output=True)
            for ext in ("key", "pub"):
                with open(os.path.join(out, f"{stem}.{ext}"), "rb") as f:
                    data[f"{stem}.{ext}"] = f.read()
        cluster.secrets[name] = data
        log(f"operator Secret {name} provided ({', '.join(sorted(data))})")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"run-rendered: FAIL: {e}", flush=True)
        sys.exit(1)
