"""deploy/k8s and the Dockerfile: the manifests parse, wire together (names, ports, probes,
mounts, env), and the config they ship passes the real binary's `weir check`.

Docker and a cluster are not needed: this checks what can be checked without them.
"""

import os
import pathlib
import subprocess
import tempfile
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
WEIR = pathlib.Path(os.environ.get("WEIR_BIN", ROOT / "target" / "debug" / "weir"))


def docs():
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc, f"empty document in {path.name}"
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def weir_toml():
    return docs()[("ConfigMap", "weir-config")]["data"]["weir.toml"]


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files


def test_weir_deployment_is_ready_on_ready_and_serves_its_service():
    d = docs()
    dep, svc = d[("Deployment", "weir")], d[("Service", "weir")]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    c = container(dep)
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] in port_names
    cfg = tomllib.loads(weir_toml())
    assert cfg["server"]["listen"] == f"0.0.0.0:{port_names['http']}"
    # Longer than the drain Weir does on SIGTERM.
    drain = int(cfg["server"]["shutdown_timeout"].rstrip("s"))
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_config_plugins_and_secrets_are_mounted_where_the_config_says():
    d = docs()
    spec = d[("Deployment", "weir")]["spec"]["template"]["spec"]
    c = container(d[("Deployment", "weir")])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert c["args"] == ["serve", "--config", "/etc/weir/weir.toml"]
    assert volumes[mounts["/etc/weir/weir.toml"]["name"]]["configMap"]["name"] == "weir-config"
    assert volumes[mounts["/etc/weir/plugins"]["name"]]["configMap"]["name"] == "weir-plugins"
    cfg = tomllib.loads(weir_toml())
    cache_dir = cfg["plugin_runtime"]["cache_dir"]
    assert any(cache_dir.startswith(p + "/") for p, m in mounts.items() if "emptyDir" in volumes[m["name"]])
    secret = d[("Secret", "weir-secrets")]
    assert c["envFrom"][0]["secretRef"]["name"] == "weir-secrets"
    for name in secret["stringData"]:
        assert "${" + name in weir_toml(), f"{name} is not used by the config"


def test_redis_is_the_shared_state_and_the_cache_is_on():
    d = docs()
    redis_svc = d[("Service", "weir-redis")]
    redis = container(d[("Deployment", "weir-redis")])
    cfg = tomllib.loads(weir_toml())
    port = redis_svc["spec"]["ports"][0]["port"]
    assert cfg["state"]["redis_url"] == f"redis://weir-redis:{port}/0"
    assert cfg["cache"]["enabled"] is True
    assert "--save" in redis["args"] and "volatile-lru" in redis["args"]


def test_the_shipped_config_passes_weir_check():
    assert WEIR.exists(), f"{WEIR} is missing: cargo build -p weir"
    with tempfile.TemporaryDirectory() as tmp:
        # The pod's paths are not writable here: check the same config with a local cache dir.
        text = weir_toml().replace("/var/cache/weir/plugins", str(pathlib.Path(tmp) / "cache"))
        path = pathlib.Path(tmp) / "weir.toml"
        path.write_text(text)
        env = dict(os.environ, OPENAI_API_KEY="sk-deploy-test", WEIR_ADMIN_TOKEN="")
        run = subprocess.run([str(WEIR), "check", "--config", str(path)], env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_builds_in_one_stage_and_runs_in_a_small_non_root_one():
    text = (ROOT / "Dockerfile").read_text()
    stages = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].startswith("rust:") and "distroless" in stages[1]
    assert "wasm32-wasip2" in text and "USER nonroot" in text and "EXPOSE 8080" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored
