// Validates `helm template` output offline against the Kubernetes API
// schemas (npm kubernetes-models 4.x: Kubernetes 1.33), then checks what
// those validators do not: that every key of every object is one the API
// knows (from the models' type declarations), and the chart's promises
// (capabilities, no privileged pods, shm sizes, probes, traffic policy,
// checksums, no hard-coded namespaces).
//
// Usage: node validate.cjs NODE_MODULES_DIR VALUES_NAME < rendered.yaml
// Prints one line per failure and exits 1 if there was any.
"use strict";
const fs = require("fs");
const path = require("path");

const modulesDir = process.argv[2];
const valuesName = process.argv[3] || "values";
const need = (m) => require(path.join(modulesDir, m));
const YAML = need("yaml");

const modelModules = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "rbac.authorization.k8s.io/v1": "kubernetes-models/rbac.authorization.k8s.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

// ---- A reader of the models' .d.ts types: enough TypeScript to know each
// object type's keys (interfaces, object literals, arrays, unions, aliases).
const named = new Map(); // qualified (and apimachinery's short) names -> type
const perFile = new Map(); // file -> Map(name -> type)

function parseType(src) {
  let i = 0;
  const ws = () => { while (i < src.length && /\s/.test(src[i])) i++; };
  const peek = (s) => (ws(), src.startsWith(s, i));
  const eat = (s) => { if (!peek(s)) throw new Error(`expected ${s} at ${src.slice(i, i + 40)}`); i += s.length; };
  function primary() {
    ws();
    let t;
    if (peek("{")) {
      eat("{");
      const props = {}; let index = null;
      while (!peek("}")) {
        if (peek("[")) { // [key: string]: T;
          eat("["); while (src[i] !== "]") i++; eat("]"); eat(":");
          index = union();
        } else {
          const m = /^"([^"]*)"\??\s*:|^([A-Za-z_$][\w$]*)\??\s*:/.exec(src.slice(i));
          if (!m) throw new Error(`property at ${src.slice(i, i + 40)}`);
          i += m[0].length;
          props[m[1] ?? m[2]] = union();
        }
        if (peek(";") || peek(",")) i++;
      }
      eat("}");
      t = { kind: "object", props, index };
    } else if (peek("Array<")) {
      eat("Array<"); t = { kind: "array", of: union() }; eat(">");
    } else if (peek('"')) {
      i++; while (src[i] !== '"') i++; i++; t = { kind: "leaf" };
    } else if (peek("(")) {
      eat("("); t = union(); eat(")");
    } else {
      const m = /^[A-Za-z_$][\w$.]*/.exec(src.slice(i));
      if (!m) throw new Error(`type at ${src.slice(i, i + 40)}`);
      i += m[0].length;
      if (peek("<")) { // generic other than Array: not descended into
        let depth = 0;
        do { if (src[i] === "<") depth++; else if (src[i] === ">") depth--; i++; } while (depth > 0);
        t = { kind: "leaf" };
      } else if (peek("[")) {
        const indexed = src.slice(i).match(/^\s*\[\s*"[^"]*"\s*\]/);
        if (indexed) { i += indexed[0].length; t = { kind: "leaf" }; } else t = { kind: "ref", name: m[0] };
      } else t = { kind: "ref", name: m[0] };
    }
    while (peek("[]")) { eat("[]"); t = { kind: "array", of: t }; }
    return t;
  }
  function union() {
    const members = [primary()];
    while (peek("|")) { eat("|"); members.push(primary()); }
    return members.length === 1 ? members[0] : { kind: "union", members };
  }
  return union();
}

function loadDeclarations(file) {
  if (perFile.has(file)) return perFile.get(file);
  const local = new Map();
  perFile.set(file, local);
  const text = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const header = /export (?:declare )?interface (\w+)(?:\s+extends\s+([\w\s,.<>"]+?))?\s*\{/g;
  let m;
  while ((m = header.exec(text))) {
    let depth = 1, j = header.lastIndex;
    while (depth > 0) { if (text[j] === "{") depth++; else if (text[j] === "}") depth--; j++; }
    const t = parseType(text.slice(header.lastIndex - 1, j));
    if (m[2] && /TypeMeta/.test(m[2])) { t.props.apiVersion ??= { kind: "leaf" }; t.props.kind ??= { kind: "leaf" }; }
    local.set(m[1], t);
    header.lastIndex = j;
  }
  const alias = /export type (\w+)\s*=\s*([^;]+);/g;
  while ((m = alias.exec(text))) { try { local.set(m[1], parseType(m[2])); } catch { /* not a shape */ } }
  const renames = /export \{([^}]*)\}/g;
  while ((m = renames.exec(text))) {
    for (const part of m[1].split(",")) {
      const r = /(\w+)\s+as\s+(\w+)/.exec(part);
      if (r && local.has(r[1])) named.set(r[2], local.get(r[1]));
    }
  }
  if (file.includes("@kubernetes-models/apimachinery")) for (const [k, v] of local) if (!named.has(k)) named.set(k, v);
  return local;
}

function loadAll(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) loadAll(p);
    else if (e.name.endsWith(".d.ts")) loadDeclarations(p);
  }
}
for (const pkg of ["kubernetes-models", "@kubernetes-models/apimachinery", "@kubernetes-models/prometheus-operator"]) {
  loadAll(path.join(modulesDir, pkg));
}

function resolve(t, local) {
  for (let n = 0; t && t.kind === "ref" && n < 20; n++) t = (local && local.get(t.name)) || named.get(t.name);
  return t && t.kind !== "ref" ? t : null;
}

// Keys the API does not know, as paths.
function unknownKeys(value, t, at, local, out) {
  t = resolve(t, local);
  if (!t || value === null || typeof value !== "object") return out;
  if (t.kind === "union") {
    const objects = t.members.map((m) => resolve(m, local)).filter((m) => m && m.kind !== "leaf");
    let best = null;
    for (const m of objects) {
      const found = unknownKeys(value, m, at, local, []);
      if (!best || found.length < best.length) best = found;
    }
    return out.concat(best || []);
  }
  if (t.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, k) => unknownKeys(v, t.of, `${at}[${k}]`, local, out));
    return out;
  }
  if (t.kind === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k in t.props) unknownKeys(v, t.props[k], `${at}.${k}`, local, out);
      else if (t.index) unknownKeys(v, t.index, `${at}.${k}`, local, out);
      else out.push(`${at}.${k}`);
    }
  }
  return out;
}

// ---- The checks.
const docs = YAML.parseAllDocuments(fs.readFileSync(0, "utf8")).map((d) => d.toJS()).filter(Boolean);
const failures = [];
const fail = (obj, what) => failures.push(`${valuesName}: ${obj ? `${obj.kind}/${obj.metadata?.name}: ` : ""}${what}`);

for (const obj of docs) {
  const where = modelModules[obj.apiVersion];
  if (!where) { fail(obj, `no schema for apiVersion ${obj.apiVersion}`); continue; }
  const mod = need(where);
  const Model = mod[obj.kind];
  if (!Model) { fail(obj, `no ${obj.kind} in ${obj.apiVersion}`); continue; }
  try {
    new Model(obj).validate();
  } catch (e) {
    fail(obj, `schema: ${e.message.split("\n").slice(0, 6).join("; ")}`);
  }
  const file = path.join(modulesDir, where, `${obj.kind}.d.ts`);
  const root = loadDeclarations(file).get(`I${obj.kind}`);
  if (!root) { fail(obj, `no type declaration for ${obj.kind} in ${file}`); continue; }
  for (const key of unknownKeys(obj, root, obj.kind, perFile.get(file), [])) fail(obj, `unknown key ${key}`);
  if (obj.metadata && "namespace" in obj.metadata) fail(obj, "hard-coded metadata.namespace (the release's namespace applies)");
}

const byKind = (k) => docs.filter((d) => d.kind === k);
const podSpecs = [
  ...byKind("Deployment").map((d) => [d, d.spec.template]),
  ...byKind("DaemonSet").map((d) => [d, d.spec.template]),
  ...byKind("Job").map((d) => [d, d.spec.template]),
  ...byKind("Pod").map((d) => [d, d]),
];
const mib = (q) => {
  const m = /^(\d+)(Mi|Gi)$/.exec(String(q));
  return m ? Number(m[1]) * (m[2] === "Gi" ? 1024 : 1) : NaN;
};
for (const [obj, tmpl] of podSpecs) {
  const spec = tmpl.spec;
  if (spec.hostNetwork || spec.hostPID || spec.hostIPC) fail(obj, "shares a host namespace");
  for (const c of [...(spec.initContainers || []), ...spec.containers]) {
    // A container's own profile overrides the pod's.
    const seccomp = (c.securityContext?.seccompProfile || spec.securityContext?.seccompProfile)?.type;
    if (seccomp !== "RuntimeDefault" && !(obj.kind === "DaemonSet" && seccomp === "Localhost")) {
      fail(obj, `container ${c.name}: seccomp profile is ${seccomp}, not RuntimeDefault`);
    }
  }
  if (obj.kind === "DaemonSet" && spec.containers.some((c) => c.securityContext?.seccompProfile)) {
    fail(obj, "a container-level seccomp profile hides the pool's nodeAgent.seccompProfile");
  }
  if (obj.kind !== "Job" && spec.automountServiceAccountToken !== false) fail(obj, "mounts a service account token it does not use");
  for (const c of [...(spec.initContainers || []), ...spec.containers]) {
    const sc = c.securityContext || {};
    if (sc.privileged !== false) fail(obj, `container ${c.name}: privileged is not false`);
    if (sc.allowPrivilegeEscalation !== false) fail(obj, `container ${c.name}: allows privilege escalation`);
    if (sc.readOnlyRootFilesystem !== true) fail(obj, `container ${c.name}: root filesystem is writable`);
    const drop = sc.capabilities?.drop || [];
    if (!drop.includes("ALL")) fail(obj, `container ${c.name}: does not drop ALL capabilities`);
    const added = sc.capabilities?.add || [];
    const nonRoot = (sc.runAsNonRoot ?? spec.securityContext?.runAsNonRoot) === true;
    if (obj.kind === "DaemonSet") {
      if (configOf(obj)?.dataplane === "userspace") {
        if (added.length) fail(obj, `userspace data plane but capabilities ${added} are added`);
        if (!nonRoot) fail(obj, "userspace data plane but the pod may run as root");
      } else {
        const base = added.filter((a) => !["BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"].includes(a));
        if (!added.includes("NET_ADMIN") || !(added.includes("BPF") || added.includes("SYS_ADMIN"))) {
          fail(obj, `eBPF data plane without CAP_BPF (or SYS_ADMIN) and CAP_NET_ADMIN: ${added}`);
        }
        if (base.length) fail(obj, `unexpected capabilities ${base}`);
      }
      for (const p of ["livenessProbe", "readinessProbe"]) if (!c[p]?.httpGet?.path) fail(obj, `node container has no ${p}`);
    } else {
      if (added.length) fail(obj, `container ${c.name} adds capabilities ${added}`);
      if (!nonRoot) fail(obj, `container ${c.name} may run as root`);
    }
    if (obj.kind === "Deployment") {
      if (c.livenessProbe?.httpGet?.path !== "/healthz") fail(obj, "controller liveness probe is not /healthz");
      if (c.readinessProbe?.httpGet?.path !== "/readyz") fail(obj, "controller readiness probe is not /readyz");
    }
  }
  if (obj.kind === "DaemonSet") {
    const shm = spec.volumes.find((v) => v.name === "shm");
    const mount = spec.containers[0].volumeMounts.find((m) => m.name === "shm");
    if (!shm?.emptyDir || shm.emptyDir.medium !== "Memory" || mount?.mountPath !== "/dev/shm") {
      fail(obj, "/dev/shm is not a memory emptyDir");
    } else {
      const segment = /segment_bytes: (\d+)MiB/.exec(configOf(obj)?.text || "");
      if (!segment) fail(obj, "no segment size in its node.yaml");
      else if (Number(segment[1]) > mib(shm.emptyDir.sizeLimit)) {
        fail(obj, `segment ${segment[1]} MiB does not fit /dev/shm sizeLimit ${shm.emptyDir.sizeLimit}`);
      }
    }
    if (spec.volumes.some((v) => v.hostPath)) fail(obj, "mounts a hostPath");
  }
  if (["Deployment", "DaemonSet"].includes(obj.kind) && !/^[0-9a-f]{64}$/.test(tmpl.metadata.annotations?.["checksum/config"] || "")) {
    fail(obj, "no checksum/config annotation: configuration changes would not restart it");
  }
}

// The node.yaml a DaemonSet mounts: {text, dataplane}.
function configOf(ds) {
  const name = ds.spec.template.spec.volumes.find((v) => v.name === "config")?.configMap?.name;
  const cm = byKind("ConfigMap").find((c) => c.metadata.name === name);
  const text = cm?.data?.["node.yaml"];
  return text ? { text, dataplane: /dataplane: (\S+)/.exec(text)?.[1] } : null;
}

for (const svc of byKind("Service")) {
  if (["NodePort", "LoadBalancer"].includes(svc.spec.type) && svc.metadata.name.endsWith("-gateway") &&
      svc.spec.externalTrafficPolicy !== "Local") {
    fail(svc, `externalTrafficPolicy is ${svc.spec.externalTrafficPolicy}, not Local`);
  }
}
if (!byKind("DaemonSet").length || byKind("Deployment").length !== 1) fail(null, "expected one controller Deployment and a node DaemonSet");

for (const f of failures) console.log(f);
console.log(`${valuesName}: ${docs.length} objects, ${failures.length} failures`);
process.exit(failures.length ? 1 : 0);
