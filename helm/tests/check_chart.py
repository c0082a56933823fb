#!/usr/bin/env python3
"""Checks of the emesh Helm chart.

For every values file (the defaults, helm/emesh/ci/*.yaml, cluster/layouts/*.yaml): `helm lint`,
`helm template`, strict schema validation of every rendered manifest with kubernetes-validate,
and checks that the manifests carry what the runtime needs: the worker list and tp the
coordinator is given match the worker StatefulSet (rank = ordinal * ranksPerPod + container,
stable DNS names through the headless Service), the etcd endpoints match the etcd members,
probes sit on the right paths and ports, GPU requests, PodDisruptionBudgets, non-root security
contexts, Services select the pods they serve. Broken values must make `helm template` fail
with a message that names the problem.

With --emesh BINARY it also checks that values rendering only today's interface use only flags
that binary accepts, and runs the `emesh plan` command of each GPU layout to see that its tp fits.

  check_chart.py --helm HELM --validator KUBERNETES_VALIDATE [--kube-version 1.30.0] [--emesh BIN]
"""

import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "emesh")
RELEASE = "emesh-ci"
NAMESPACE = "inference"

REQUIRED_METRICS = [
    "emesh:num_requests_running",
    "emesh:num_requests_waiting",
    "emesh:time_to_first_token_seconds",
    "emesh:inter_token_latency_seconds",
    "emesh:e2e_request_latency_seconds",
    "emesh:prompt_tokens_total",
    "emesh:generation_tokens_total",
    "emesh:cache_usage_ratio",
    "emesh:rank_tokens_received_total",
    "emesh:layer_load_imbalance",
    "emesh:dispatch_latency_seconds",
    "emesh:combine_latency_seconds",
    "emesh:placement_epoch",
]

# (name, values files relative to ROOT, expected text in the error)
NEGATIVE = [
    ("workers not a multiple of tp", ["--set", "layout.workers=15", "--set", "layout.tp=2", "--set", "worker.ranksPerPod=1"],
     "layout.workers (15) is not a multiple of layout.tp (2)"),
    ("workers not a multiple of ranksPerPod", ["--set", "layout.workers=12"],
     "layout.workers (12) is not a multiple of worker.ranksPerPod (8)"),
    ("attention group across pods", ["--set", "layout.workers=24", "--set", "layout.tp=3"],
     "would span two worker pods"),
    ("standby coordinators without etcd", ["--set", "etcd.enabled=false"],
     "standby coordinators need etcd"),
    ("even etcd members", ["--set", "etcd.replicas=2"], "etcd.replicas (2) must be odd"),
    ("etcd TLS without a secret", ["--set", "etcd.tls.enabled=true"], "etcd.tls.existingSecret"),
    ("object storage without a source", ["--set", "model.source.type=objectStorage"],
     "needs model.source.objectStorage.uri"),
    ("ServiceMonitor without the HTTP API",
     ["--set", "metrics.serviceMonitor.enabled=true", "--set", "coordinator.http.enabled=false"],
     "needs coordinator.http.enabled"),
    ("unknown numerics (schema)", ["--set", "layout.numerics=fast"], "numerics"),
    ("zero workers (schema)", ["--set", "layout.workers=0"], "workers"),
    ("misspelt key (schema)", ["--set", "worker.antiAfinity=hard"], "antiAfinity"),
    ("unknown model source (schema)", ["--set", "model.source.type=nfs"], "type"),
]


class Failures:
    def __init__(self):
        self.items = []

    def check(self, cond, case, msg):
        if not cond:
            self.items.append(f"{case}: {msg}")
        return cond


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def deep_merge(base, over):
    for k, v in (over or {}).items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def values_for(files):
    with open(os.path.join(CHART, "values.yaml")) as f:
        v = yaml.safe_load(f)
    for path in files:
        with open(os.path.join(ROOT, path)) as f:
            deep_merge(v, yaml.safe_load(f))
    return v


def arg_after(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def subset(sel, labels):
    return all(labels.get(k) == v for k, v in (sel or {}).items())


def check_case(case, files, docs, fx):
    v = values_for(files)
    ok = lambda cond, msg: fx.check(cond, case, msg)  # noqa: E731
    full = RELEASE if "emesh" in RELEASE else f"{RELEASE}-emesh"  # as emesh.fullname
    by = {}
    for d in docs:
        by[(d["kind"], d["metadata"]["name"])] = d
    domain = v["clusterDomain"]
    workers, tp = int(v["layout"]["workers"]), int(v["layout"]["tp"])
    w = v["worker"]
    rpp, base = int(w["ranksPerPod"]), int(w["port"])
    model_dir = v["model"]["mountPath"].rstrip("/") + "/" + v["model"]["name"]

    # The layout ConfigMap: the coordinator's worker list, in rank order.
    cm = by.get(("ConfigMap", f"{full}-layout"))
    if not ok(cm is not None, "no layout ConfigMap"):
        return
    addrs = cm["data"]["workers"].split(",")
    ok(len(addrs) == workers, f"layout lists {len(addrs)} workers, values say {workers}")
    ok(cm["data"]["tp"] == str(tp), f"layout tp {cm['data']['tp']} != {tp}")
    ok(workers % tp == 0, f"{workers} workers do not split into groups of {tp}")
    sts_name = f"{full}-worker"
    pat = re.compile(rf"^{re.escape(sts_name)}-(\d+)\.{re.escape(sts_name)}\.{NAMESPACE}\.svc\.{re.escape(domain)}:(\d+)$")
    for r, a in enumerate(addrs):
        m = pat.match(a)
        if ok(m is not None, f"rank {r} address {a} is not a stable worker DNS name"):
            ok(int(m.group(1)) == r // rpp and int(m.group(2)) == base + r % rpp,
               f"rank {r} at {a}: expected pod ordinal {r // rpp}, port {base + r % rpp}")
    layout = yaml.safe_load(cm["data"]["layout.yaml"])
    ok(layout["workers"] == workers and layout["tp"] == tp and layout["dp"] == workers // tp, "layout.yaml disagrees")
    ok([x["addr"] for x in layout["ranks"]] == addrs, "layout.yaml ranks differ from `workers`")
    ok(all(x["group"] == x["rank"] // tp for x in layout["ranks"]), "layout.yaml groups are not rank / tp")

    # Workers: a StatefulSet behind a headless Service.
    sts = by.get(("StatefulSet", sts_name))
    svc = by.get(("Service", sts_name))
    if not ok(sts is not None and svc is not None, "worker StatefulSet or headless Service missing"):
        return
    pod = sts["spec"]["template"]
    ok(sts["spec"]["serviceName"] == sts_name, "worker StatefulSet serviceName is not the headless Service")
    ok(svc["spec"].get("clusterIP") == "None", "worker Service is not headless")
    ok(svc["spec"].get("publishNotReadyAddresses") is True, "worker Service does not publish starting ranks")
    ok(subset(svc["spec"]["selector"], pod["metadata"]["labels"]), "worker Service does not select the worker pods")
    ok(subset(sts["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), "worker selector")
    containers = pod["spec"]["containers"]
    ok(sts["spec"]["replicas"] * len(containers) == workers,
       f"{sts['spec']['replicas']} pods x {len(containers)} ranks != {workers} workers")
    svc_ports = {p["port"] for p in svc["spec"]["ports"]}
    gpus = int(w["gpusPerRank"])
    for i, c in enumerate(containers):
        port = base + i
        args = c["args"]
        ok(args[0] == "worker", f"container {c['name']} does not run `emesh worker`")
        ok(arg_after(args, "--listen") == f"0.0.0.0:{port}", f"{c['name']} listens on {arg_after(args, '--listen')}")
        ok(arg_after(args, "--model") == model_dir, f"{c['name']} --model {arg_after(args, '--model')} != {model_dir}")
        ok([p["containerPort"] for p in c["ports"]] == [port], f"{c['name']} containerPort")
        ok(port in svc_ports, f"port {port} missing from the headless Service")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            ok(c.get(probe, {}).get("tcpSocket", {}).get("port") == port, f"{c['name']} {probe} not on its gRPC port")
        res = c.get("resources", {})
        if gpus > 0:
            ok(str(res.get("limits", {}).get(w["gpuResource"])) == str(gpus), f"{c['name']} GPU limit")
            ok(str(res.get("requests", {}).get(w["gpuResource"])) == str(gpus), f"{c['name']} GPU request")
        else:
            ok(w["gpuResource"] not in res.get("limits", {}), f"{c['name']} asks for a GPU")
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        ok(mounts.get("model", {}).get("mountPath") == v["model"]["mountPath"] and mounts["model"].get("readOnly"),
           f"{c['name']} model not mounted read-only at {v['model']['mountPath']}")
    anti = pod["spec"].get("affinity", {}).get("podAntiAffinity", {})
    if w["antiAffinity"] == "hard":
        ok("requiredDuringSchedulingIgnoredDuringExecution" in anti, "hard worker anti-affinity missing")
    elif w["antiAffinity"] == "soft":
        ok("preferredDuringSchedulingIgnoredDuringExecution" in anti, "soft worker anti-affinity missing")
    else:
        ok(not anti, "worker anti-affinity present although antiAffinity=none")

    # The coordinator.
    c = v["coordinator"]
    dep = by.get(("Deployment", f"{full}-coordinator"))
    if not ok(dep is not None, "coordinator Deployment missing"):
        return
    ok(dep["spec"]["replicas"] == c["replicas"], "coordinator replicas")
    cpod = dep["spec"]["template"]
    cc = cpod["spec"]["containers"][0]
    cargs = cc["args"]
    env = {e["name"]: e for e in cc.get("env", [])}
    ok(cargs[0] == "coordinator", "coordinator does not run `emesh coordinator`")
    ok(arg_after(cargs, "--workers") == "$(EMESH_WORKERS)", "coordinator --workers is not the layout list")
    ok(env.get("EMESH_WORKERS", {}).get("valueFrom", {}).get("configMapKeyRef") == {"name": f"{full}-layout", "key": "workers"},
       "EMESH_WORKERS does not come from the layout ConfigMap")
    ok(arg_after(cargs, "--tp") == "$(EMESH_TP)", "coordinator --tp is not the layout's")
    ok(env.get("EMESH_TP", {}).get("valueFrom", {}).get("configMapKeyRef") == {"name": f"{full}-layout", "key": "tp"},
       "EMESH_TP does not come from the layout ConfigMap")
    ok(arg_after(cargs, "--model") == model_dir, "coordinator --model")
    api = by.get(("Service", full))
    if c["http"]["enabled"]:
        port = int(c["http"]["port"])
        ok(arg_after(cargs, "--http") == f"0.0.0.0:{port}", "coordinator --http")
        ok({"name": "http", "containerPort": port, "protocol": "TCP"} in cc.get("ports", []), "coordinator http port")
        for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            g = cc.get(probe, {}).get("httpGet", {})
            ok(g.get("path") == path and g.get("port") == "http", f"coordinator {probe} is {g}, expected {path} on http")
        if ok(api is not None, "API Service missing"):
            ok(subset(api["spec"]["selector"], cpod["metadata"]["labels"]), "API Service does not select coordinators")
            ok(api["spec"]["selector"].get("app.kubernetes.io/component") == "coordinator", "API Service selector")
            ok(any(p["name"] == "http" and p["port"] == port for p in api["spec"]["ports"]), "API Service port")
    else:
        ok("--http" not in cargs and api is None and "readinessProbe" not in cc, "HTTP parts rendered although disabled")
    pdb = by.get(("PodDisruptionBudget", f"{full}-coordinator"))
    if c["pdb"]["enabled"] and c["replicas"] > c["pdb"]["minAvailable"]:
        if ok(pdb is not None, "coordinator PodDisruptionBudget missing"):
            ok(subset(pdb["spec"]["selector"]["matchLabels"], cpod["metadata"]["labels"]), "coordinator PDB selector")
    wpdb = by.get(("PodDisruptionBudget", sts_name))
    if w["pdb"]["enabled"] and ok(wpdb is not None, "worker PodDisruptionBudget missing"):
        ok(subset(wpdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), "worker PDB selector")
        ok(wpdb["spec"].get("maxUnavailable") == w["pdb"]["maxUnavailable"], "worker PDB maxUnavailable")

    # etcd: the endpoints every process is given are the members that exist.
    e = v["etcd"]
    ests = by.get(("StatefulSet", f"{full}-etcd"))
    everyone = [("coordinator", cargs)] + [(x["name"], x["args"]) for x in containers]
    if not e["enabled"]:
        ok(ests is None, "etcd deployed although disabled")
        for name, args in everyone:
            ok(not any(a.startswith("--etcd") for a in args), f"{name} has etcd flags although etcd is disabled")
    else:
        scheme = "https" if e["tls"]["enabled"] else "http"
        if e["endpoints"]:
            expected = ",".join(e["endpoints"])
            ok(ests is None, "in-chart etcd deployed although endpoints are given")
        else:
            n, name = int(e["replicas"]), f"{full}-etcd"
            expected = ",".join(f"{scheme}://{name}-{i}.{name}.{NAMESPACE}.svc.{domain}:{e['clientPort']}" for i in range(n))
            esvc = by.get(("Service", name))
            if ok(ests is not None and esvc is not None, "in-chart etcd StatefulSet or Service missing"):
                ok(ests["spec"]["replicas"] == n and ests["spec"]["serviceName"] == name, "etcd members")
                ok(ests["spec"].get("podManagementPolicy") == "Parallel", "etcd members must start together")
                ok(esvc["spec"].get("clusterIP") == "None" and esvc["spec"].get("publishNotReadyAddresses"), "etcd Service")
                sports = {p["name"]: p["port"] for p in esvc["spec"]["ports"]}
                ok(sports.get("client") == e["clientPort"] and sports.get("peer") == e["peerPort"], f"etcd Service ports {sports}")
                econt = ests["spec"]["template"]["spec"]["containers"][0]
                cports = {p["name"]: p["containerPort"] for p in econt["ports"]}
                ok(cports.get("client") == e["clientPort"] and cports.get("peer") == e["peerPort"], f"etcd container ports {cports}")
                ok(econt["readinessProbe"]["httpGet"]["path"].startswith("/health"), "etcd readiness probe")
                eargs = ests["spec"]["template"]["spec"]["containers"][0]["args"]
                initial = arg_after(eargs, "--initial-cluster") or ""
                for i in range(n):
                    ok(f"{name}-{i}={scheme}://{name}-{i}.{name}.{NAMESPACE}.svc.{domain}:{e['peerPort']}" in initial,
                       f"member {i} missing from --initial-cluster")
                ok(arg_after(eargs, "--listen-client-urls") == f"{scheme}://0.0.0.0:{e['clientPort']}", "etcd client URL")
                if n > 1:
                    epdb = by.get(("PodDisruptionBudget", name))
                    ok(epdb is not None and epdb["spec"]["minAvailable"] == n // 2 + 1, "etcd PDB does not keep a quorum")
        for name, args in everyone:
            ok(arg_after(args, "--etcd-endpoints") == expected, f"{name} --etcd-endpoints {arg_after(args, '--etcd-endpoints')} != {expected}")
            if e["tls"]["enabled"]:
                ok(arg_after(args, "--etcd-cacert") == "/etc/emesh/etcd-tls/ca.crt", f"{name} etcd TLS flags")
            if e["auth"]["username"]:
                ok(arg_after(args, "--etcd-user") == e["auth"]["username"], f"{name} --etcd-user")

    # Every pod runs as non-root; every container is locked down.
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        sc = spec.get("securityContext", {})
        ok(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, f"{d['kind']}/{d['metadata']['name']} may run as root")
        for x in spec.get("initContainers", []) + spec["containers"]:
            xs = x.get("securityContext", {})
            ok(xs.get("allowPrivilegeEscalation") is False and xs.get("readOnlyRootFilesystem") is True,
               f"{d['metadata']['name']}/{x['name']} security context")
            ok("image" in x and ":" in x["image"], f"{x['name']} image has no tag")

    # Every Service selects pods of this release.
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for d in docs:
        if d["kind"] == "Service":
            ok(any(subset(d["spec"]["selector"], t) for t in templates), f"Service {d['metadata']['name']} selects no pods")

    if v["networkPolicy"]["enabled"]:
        np = by.get(("NetworkPolicy", sts_name))
        if ok(np is not None, "worker NetworkPolicy missing"):
            ok(subset(np["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"]), "worker NetworkPolicy selector")
            ports = {p["port"] for r in np["spec"]["ingress"] for p in r["ports"]}
            ok(ports == {base + i for i in range(rpp)}, f"worker NetworkPolicy ports {ports}")
    sm = by.get(("ServiceMonitor", full))
    if v["metrics"]["serviceMonitor"]["enabled"]:
        if ok(sm is not None and api is not None, "ServiceMonitor missing"):
            ok(subset(sm["spec"]["selector"]["matchLabels"], api["metadata"]["labels"]), "ServiceMonitor selects no Service")
            ep = sm["spec"]["endpoints"][0]
            ok(ep["port"] == "http" and ep["path"] == "/metrics", "ServiceMonitor endpoint")
    if v["metrics"]["grafanaDashboard"]["enabled"]:
        dash = by.get(("ConfigMap", f"{full}-dashboard"))
        if ok(dash is not None, "dashboard ConfigMap missing"):
            text = dash["data"]["emesh.json"]
            json.loads(text)
            ok(all(m in text for m in REQUIRED_METRICS), "dashboard lacks a metric")
    return v


def run_today_cluster(helm, emesh, fx):
    """Runs the argument vectors the chart renders for today's binary (cpu-demo + today, with
    the tiny preset) as real processes on loopback: the init container's gen-model script, one
    `emesh worker` per rank, and the coordinator fed the layout ConfigMap's worker list and tp."""
    import shutil
    import signal
    case = "cpu-demo + today on loopback"
    tmp = tempfile.mkdtemp(prefix="emesh-helm-e2e-")
    procs = []
    try:
        t = run([helm, "template", RELEASE, CHART, "--namespace", NAMESPACE,
                 "-f", os.path.join(ROOT, "cluster/layouts/cpu-demo.yaml"),
                 "-f", os.path.join(CHART, "ci/today-values.yaml"),
                 "--set", "model.source.generate.preset=tiny", "--set", f"model.mountPath={tmp}/models"])
        if not fx.check(t.returncode == 0, case, t.stderr):
            return
        docs = [d for d in yaml.safe_load_all(t.stdout) if d]
        kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[-1]): d for d in docs}
        sts, dep, cm = kinds[("StatefulSet", "worker")], kinds[("Deployment", "coordinator")], kinds[("ConfigMap", "layout")]
        env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(emesh)) + os.pathsep + os.environ["PATH"])
        init = sts["spec"]["template"]["spec"]["initContainers"][0]["args"][0]
        g = run(["/bin/sh", "-c", init], env=env)
        if not fx.check(g.returncode == 0, case, "gen-model init script failed: " + g.stderr[-400:]):
            return
        wargs = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        names = cm["data"]["workers"].split(",")
        addrs = []
        for i, name in enumerate(names):
            args = [x.replace("$(POD_NAME)", name.split(".")[0]).replace("0.0.0.0:", "127.0.0.1:") for x in wargs]
            args[args.index("--listen") + 1] = "127.0.0.1:0"
            p = subprocess.Popen([emesh, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            addrs.append(json.loads(p.stdout.readline())["listening"])
        cargs = [x.replace("$(EMESH_WORKERS)", ",".join(addrs)).replace("$(EMESH_TP)", cm["data"]["tp"])
                 for x in dep["spec"]["template"]["spec"]["containers"][0]["args"] if x != "--keep-running"]
        r = run([emesh, *cargs], timeout=120)
        out = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        good = fx.check(out.get("workers") == len(names) and str(out.get("tp")) == cm["data"]["tp"] and out.get("tokens"),
                        case, f"coordinator failed: rc={r.returncode} {r.stderr[-400:]}")
        if good:
            print(f"ok  {case}: {out['workers']} workers, tp={out['tp']}, dp={out['dp']}, {len(out['tokens'])} tokens generated")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def help_flags(emesh, sub):
    out = run([emesh, sub, "--help"]).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--validator", required=True, help="the kubernetes-validate executable")
    ap.add_argument("--kube-version", default="1.30.0")
    ap.add_argument("--emesh", default="", help="an emesh binary (optional): flag and plan checks")
    ap.add_argument("--out", default="", help="keep the rendered manifests here")
    a = ap.parse_args()
    fx = Failures()
    out = a.out or tempfile.mkdtemp(prefix="emesh-helm-")
    os.makedirs(out, exist_ok=True)

    cases = [("default", [])]
    cases += [(os.path.basename(p)[:-5], [os.path.relpath(p, ROOT)]) for p in sorted(glob.glob(os.path.join(CHART, "ci", "*.yaml")))]
    cases += [("layout " + os.path.basename(p)[:-5], [os.path.relpath(p, ROOT)])
              for p in sorted(glob.glob(os.path.join(ROOT, "cluster", "layouts", "*.yaml")))]
    cases.append(("layout cpu-demo + today", ["cluster/layouts/cpu-demo.yaml", "helm/emesh/ci/today-values.yaml"]))

    with open(os.path.join(CHART, "dashboards", "emesh.json")) as f:
        dash = f.read()
    json.loads(dash)
    fx.check(all(m in dash for m in REQUIRED_METRICS), "dashboard", "dashboards/emesh.json lacks a required metric: "
             + ", ".join(m for m in REQUIRED_METRICS if m not in dash))

    rendered = {}
    for name, files in cases:
        fargs = [x for f in files for x in ("-f", os.path.join(ROOT, f))]
        lint = run([a.helm, "lint", CHART, "--strict", "--quiet", *fargs])
        if not fx.check(lint.returncode == 0, name, "helm lint failed:\n" + lint.stdout + lint.stderr):
            continue
        t = run([a.helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, *fargs])
        if not fx.check(t.returncode == 0, name, "helm template failed:\n" + t.stderr):
            continue
        path = os.path.join(out, re.sub(r"[^a-z0-9.-]+", "_", name) + ".yaml")
        with open(path, "w") as f:
            f.write(t.stdout)
        docs = [d for d in yaml.safe_load_all(t.stdout) if d]
        rendered[name] = (files, docs, path)

    # Strict schema validation of every rendered manifest, all files in one run.
    paths = [p for _, _, p in rendered.values()]
    kv = run([a.validator, "--strict", "--quiet", "-k", a.kube_version, *paths])
    fx.check(kv.returncode == 0, "kubernetes-validate", f"strict validation against {a.kube_version} failed:\n" + kv.stdout + kv.stderr)

    emesh = a.emesh if a.emesh and os.access(a.emesh, os.X_OK) else ""
    flags = {s: help_flags(emesh, s) for s in ("worker", "coordinator")} if emesh else {}
    pending = set()
    for name, (files, docs, path) in rendered.items():
        before = len(fx.items)
        v = check_case(name, files, docs, fx)
        kinds = sorted({d["kind"] for d in docs})
        if v and emesh:
            for d in docs:
                if d["kind"] not in ("Deployment", "StatefulSet") or "etcd" in d["metadata"]["name"]:
                    continue
                for c in d["spec"]["template"]["spec"]["containers"]:
                    sub = c["args"][0]
                    unknown = {x for x in c["args"] if x.startswith("--") and x not in flags[sub]}
                    pending |= unknown
                    fx.check(not unknown, name, f"{sub} flags the binary does not accept: {sorted(unknown)}")
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-layout"))
            plan = cm["data"]["plan"].split()
            if not v["layout"]["plan"]["gpu"].startswith("cpu:") and plan[3].startswith("deepseek-"):
                p = run([emesh, *plan[1:], "--json"])
                try:
                    rows = [x for x in json.loads(p.stdout)["layouts"] if x["tp"] == v["layout"]["tp"]]
                    fx.check(rows and rows[0]["fits"], name, f"`{cm['data']['plan']}`: tp={v['layout']['tp']} does not fit")
                    if rows and rows[0]["fits"]:
                        kinds.append(f"plan: {rows[0]['sequences_total']} sequences fit")
                except (ValueError, KeyError) as err:
                    fx.check(False, name, f"`{cm['data']['plan']}` failed: {err} {p.stderr}")
        status = "ok " if len(fx.items) == before else "FAIL"
        print(f"{status} {name}: {len(docs)} manifests ({', '.join(kinds)})")

    if emesh:
        run_today_cluster(a.helm, emesh, fx)

    for name, args, expect in NEGATIVE:
        t = run([a.helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args])
        good = t.returncode != 0 and expect in t.stderr
        fx.check(good, f"refuses {name}", f"expected `helm template` to fail with {expect!r}; rc={t.returncode} {t.stderr.strip()[:400]}")
        lines = [x for x in t.stderr.splitlines() if expect in x] or t.stderr.strip().splitlines() or [""]
        msg = re.sub(r"^Error: (execution error at \([^)]*\): )?", "", lines[0].strip())
        print(f"{'ok ' if good else 'FAIL'} refuses {name}: {msg[:160]}")

    if pending:
        print("intended flags the emesh binary does not accept yet: " + " ".join(sorted(pending)))
    print(f"rendered manifests: {out}")
    if fx.items:
        print(f"\n{len(fx.items)} failure(s):", file=sys.stderr)
        for i in fx.items:
            print("  - " + i, file=sys.stderr)
        return 1
    print(f"all {len(rendered)} values files and {len(NEGATIVE)} refusals passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
