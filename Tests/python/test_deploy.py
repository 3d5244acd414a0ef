"""docker/ and k8s/: linted, validated against a pinned Kubernetes, and checked against the binary they
run (flags it accepts, libraries it links, ports and probe paths it serves), plus a kubelet-style probe
simulation against a real `contrail serve`."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ROOT, ServerProcess, free_port

VENV_BIN = os.path.dirname(sys.executable)
KUBERNETES_VERSION = "1.33.0"  # the schemas manifests are validated against (GKE's regular channel, 2026)
OVERLAYS = ["k8s/overlays/cpu", "k8s/overlays/tpu-v5e"]
COMPONENT_FILES = ["k8s/components/autoscaling/hpa.yaml", "k8s/components/autoscaling/podmonitoring.yaml"]
# Custom resources without a schema in kubernetes-validate: checked for shape here, not validated.
NO_SCHEMA = {"PodMonitoring"}


def render(overlay, use_kubectl=None):
    """The overlay's objects: `kubectl kustomize` when installed, else scripts/kustomize_render.py."""
    kubectl = shutil.which("kubectl") if use_kubectl is not False else None
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", os.path.join(ROOT, overlay)], capture_output=True, text=True, check=True).stdout
    else:
        out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "kustomize_render.py"), os.path.join(ROOT, overlay)],
                             capture_output=True, text=True, check=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def by_kind(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def serve_flags():
    """Every --flag `contrail serve --help` lists (aliases included)."""
    out = subprocess.run([ServerProcess.bin(), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9_-]*)", out))


def test_dockerfile_lints():
    r = subprocess.run([os.path.join(VENV_BIN, "hadolint"), os.path.join(ROOT, "docker", "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def runtime_packages():
    """{package: [sonames]} from docker/runtime-packages.txt."""
    packages = {}
    with open(os.path.join(ROOT, "docker", "runtime-packages.txt")) as f:
        for line in f:
            fields = line.split("#")[0].split()
            if fields:
                packages[fields[0]] = fields[1:]
    return packages


def test_runtime_packages_are_what_the_binary_links():
    out = subprocess.run(["ldd", ServerProcess.bin()], capture_output=True, text=True, check=True).stdout
    linked = {line.split()[0] for line in out.splitlines() if line.strip()}
    # glibc is the base image's; the Swift runtime (libswift*, Foundation, dispatch) is linked statically
    # into the image's binary (--static-swift-stdlib), dynamically in this development build.
    base = re.compile(r"^(linux-vdso|/lib64/ld-linux|libc\.so|libm\.so|libpthread|libdl|librt|libresolv)")
    swift = re.compile(r"^(libswift|lib_FoundationICU|libFoundation|libdispatch|libBlocksRuntime)")
    needed = {lib for lib in linked if not base.match(lib) and not swift.match(lib)}
    listed = {so for sonames in runtime_packages().values() for so in sonames}
    assert needed - listed == set(), "linked but not installed by the image"
    assert listed - needed == set(), "installed by the image but not linked"


def test_dockerfile_contract():
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        text = f.read()
    assert "runtime-packages.txt" in text and "--static-swift-stdlib" in text
    assert re.search(r"^EXPOSE 8000 9000$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["contrail", "serve"\]$', text, re.M)
    assert re.search(r'^HEALTHCHECK .*CMD \["contrail", "probe", "--port", "8000"\]$', text, re.M)
    assert re.search(r"^USER 10001$", text, re.M), "runs as the non-root user the manifests expect"
    # Every build-context path the Dockerfile copies is let through by .dockerignore.
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        allowed = [line[1:].rstrip("/") for line in f.read().split() if line.startswith("!")]
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), source
            assert os.path.exists(os.path.join(ROOT, source)), source


def test_manifests_validate(tmp_path):
    files = list(COMPONENT_FILES)
    for overlay in OVERLAYS:
        path = tmp_path / (overlay.replace("/", "_") + ".yaml")
        path.write_text(yaml.safe_dump_all(render(overlay)))
        files.append(str(path))
    r = subprocess.run([os.path.join(VENV_BIN, "kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict",
                        *[os.path.join(ROOT, f) for f in files]], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # Only the custom resources named in NO_SCHEMA go unvalidated.
    skipped = set(re.findall(r"Couldn't find schema for kind (\w+)", r.stdout + r.stderr))
    assert skipped == NO_SCHEMA, r.stdout + r.stderr
    with open(os.path.join(ROOT, COMPONENT_FILES[1])) as f:
        monitor = yaml.safe_load(f)
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: only the Python renderer runs")
def test_python_renderer_matches_kubectl():
    for overlay in OVERLAYS:
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(render(overlay, use_kubectl=True), key=key) == sorted(render(overlay, use_kubectl=False), key=key)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_match_the_binary(overlay):
    objects = render(overlay)
    deployment, service = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    assert service["metadata"]["name"] == "jetstream-svc"
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(8000, "http"), (9000, "grpc")}
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (c,) = pod["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 9000}
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthcheck", "port": "http"}, probe
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # Every flag the manifest passes is one `contrail serve` accepts, and the ports are the ones exposed.
    flags = serve_flags()
    for arg in c["args"]:
        assert arg.split("=")[0] in flags, f"{overlay}: contrail serve does not accept {arg}"
    assert "--http-port=8000" in c["args"] and "--grpc-port=9000" in c["args"]
    # The pod outlives the drain: preStop sleep + --shutdown-grace fits the termination grace period.
    grace = next(float(a.split("=")[1]) for a in c["args"] if a.startswith("--shutdown-grace="))
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pre_stop + grace < pod["spec"]["terminationGracePeriodSeconds"]
    # Liveness never fires during a drain (the listeners close at SIGTERM, so its probes fail then).
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > pod["spec"]["terminationGracePeriodSeconds"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001


def healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_probe_simulation():
    """Polls /healthcheck every second as kubelet would, with the CPU overlay's thresholds: the pod turns
    ready after loading and warm-up within the startup budget, stays ready, and turns unready as soon as
    it drains while the request in flight still completes."""
    (c,) = by_kind(render("k8s/overlays/cpu"), "Deployment")["spec"]["template"]["spec"]["containers"]
    startup, readiness = c["startupProbe"], c["readinessProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    args = [a for a in c["args"] if not a.startswith(("--http-port", "--grpc-port"))]
    s = ServerProcess(extra=args, wait_ready=False, test_services=False)
    start = time.time()
    while not healthy(s.http_port):
        assert time.time() - start < budget, f"not ready within the startup probe's {budget} s"
        assert s.proc.poll() is None, s.output()
        time.sleep(1)
    assert all(healthy(s.http_port) for _ in range(3))
    # The image's HEALTHCHECK command agrees.
    assert subprocess.run([ServerProcess.bin(), "probe", "--port", str(s.http_port)]).returncode == 0

    result = {}

    def generate():
        body = json.dumps({"prompt": "Count to fifty:", "max_tokens": 120}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s.http_port}/generate", data=body), timeout=60) as r:
            result["status"] = r.status

    t = threading.Thread(target=generate)
    t.start()
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    # Unready at the next probe: within one readiness period × failure threshold.
    assert not healthy(s.http_port)
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 5
    t.join(timeout=60)
    assert result.get("status") == 200
    assert s.proc.wait(timeout=30) == 0


def test_probe_command_failures():
    r = subprocess.run([ServerProcess.bin(), "probe", "--port", str(free_port()), "--timeout", "1"], capture_output=True, text=True)
    assert r.returncode == 1 and "/healthcheck" in r.stderr
    s = ServerProcess(test_services=False)
    try:
        r = subprocess.run([ServerProcess.bin(), "probe", "--port", str(s.http_port), "--path", "/nonexistent"], capture_output=True, text=True)
        assert r.returncode == 1 and "answered 404" in r.stderr
    finally:
        assert s.stop() == 0


def test_tpu_overlay_is_the_gke_tutorial_shape():
    objects = render("k8s/overlays/tpu-v5e")
    pod = by_kind(objects, "Deployment")["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
    # The tutorial's v5e-8 slice: a 2x4 topology's 8 chips, all of them one tensor-parallel group.
    assert spec["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "2x4"
    (c,) = spec["containers"]
    assert c["resources"]["limits"]["google.com/tpu"] == c["resources"]["requests"]["google.com/tpu"] == "8"
    assert "--pjrt-tensor-parallel=8" in c["args"]
    assert "--backend=pjrt" in c["args"] and "--pjrt-plugin=/opt/libtpu/libtpu/libtpu.so" in c["args"]
    for flag in ("--model_name", "--batch_size", "--max_cache_length", "--checkpoint_path", "--tokenizer_path", "--quantize_weights"):
        assert any(a.startswith(flag + "=") for a in c["args"]), flag
    # The checkpoint comes from GCS through the GCS FUSE CSI driver, read-only.
    assert pod["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    (volume,) = spec["volumes"]
    assert volume["csi"]["driver"] == "gcsfuse.csi.storage.gke.io" and c["volumeMounts"][0]["readOnly"]
    # Autoscaling on the server's own metrics, scraped from /metrics.
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == by_kind(objects, "Deployment")["metadata"]["name"]
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert names == {"prometheus.googleapis.com|jetstream_prefill_backlog_size|gauge",
                     "prometheus.googleapis.com|jetstream_slots_used_percentage|gauge"}
    assert by_kind(objects, "PodMonitoring")["spec"]["endpoints"][0]["path"] == "/metrics"
    # The image the overlay names is built with libtpu where --pjrt-plugin looks for it.
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        assert "--target /out/libtpu" in f.read()
