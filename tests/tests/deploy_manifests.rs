//! The Kubernetes manifests in deploy/kubernetes/ (issue 16) against the
//! Kubernetes API schemas, with a real validator (PyPI kubernetes-validate,
//! installed by `cargo xtask setup`), in strict mode (unknown fields are
//! errors), for the oldest and newest Kubernetes it knows that the
//! manifests claim to support. Then what a schema cannot know: the rules
//! file inside the ConfigMap loads, and the DaemonSet points at the
//! ConfigMap, the image `cargo xtask image` builds, and the status file the
//! readiness probe reads.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// The supported range: k3s/Proxmox clusters in the field run 1.28+.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn manifests() -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    ensure!(
        v.len() >= 3,
        "expected the manifests in {}",
        deploy_dir().display()
    );
    Ok(v)
}

/// The validator, or `None` (a loud skip) where it is not installed and
/// nothing demands it.
fn validator() -> Option<PathBuf> {
    let bin = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/k8s-venv/bin/kubernetes-validate")
        });
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("FORWARDER_REQUIRE_ROOT_TESTS").is_some() {
        panic!(
            "kubernetes-validate not found at {} (run `cargo xtask setup`); CI must not skip",
            bin.display()
        );
    }
    eprintln!("!!!! SKIPPED: kubernetes-validate not installed (cargo xtask setup) !!!!");
    None
}

fn validate(bin: &Path, version: &str, files: &[PathBuf]) -> Result<(bool, String)> {
    let out = Command::new(bin)
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Every document of every manifest, as JSON, parsed by the validator's
/// own YAML library (PyYAML in its venv).
fn documents(bin: &Path) -> Result<Vec<Value>> {
    let python = bin.with_file_name("python");
    let mut all = Vec::new();
    for f in manifests()? {
        let out = Command::new(&python)
            .args([
                "-c",
                "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&f)
            .output()?;
        ensure!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        all.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    Ok(all)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} in deploy/kubernetes"))
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() -> Result<()> {
    let Some(bin) = validator() else {
        return Ok(());
    };
    let files = manifests()?;
    for v in KUBERNETES_VERSIONS {
        let (ok, text) = validate(&bin, v, &files)?;
        ensure!(ok, "Kubernetes {v}:\n{text}");
        for kind in [
            "configmap/forwarder-rules",
            "daemonset/forwarder",
            "namespace/forwarder",
        ] {
            ensure!(
                text.contains(&format!("passed for resource {kind}")),
                "{kind} not checked:\n{text}"
            );
        }
    }
    // The validator bites: a misspelt field in the pod spec fails.
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml"))?;
    let broken = ds.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetworking: true",
        1,
    );
    ensure!(broken != ds);
    let tmp = std::env::temp_dir().join(format!("fwt-{}-broken-ds.yaml", std::process::id()));
    std::fs::write(&tmp, broken)?;
    let (ok, text) = validate(&bin, KUBERNETES_VERSIONS[1], std::slice::from_ref(&tmp))?;
    let _ = std::fs::remove_file(&tmp);
    ensure!(
        !ok && text.contains("'hostNetworking' was unexpected"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_configmap_rules_load_and_the_daemonset_fits_them() -> Result<()> {
    let Some(bin) = validator() else {
        return Ok(());
    };
    let docs = documents(&bin)?;
    let cm = kind(&docs, "ConfigMap")?;
    let text = cm["data"]["rules.toml"]
        .as_str()
        .context("rules.toml key")?;
    let loaded = match rules::load_str("configmap.yaml: rules.toml", text) {
        Ok(l) => l,
        Err(d) => bail!("the ConfigMap's rules do not load:\n{d}"),
    };
    ensure!(!loaded.rules.forwards.is_empty());

    let ds = kind(&docs, "DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(pod["hostNetwork"] == true && pod["hostPID"] == true);
    // Targets named by cluster DNS need the pod to ask CoreDNS, which a
    // host-network pod does only with this policy.
    let cluster_names = loaded
        .rules
        .forwards
        .iter()
        .filter_map(|f| f.target.name())
        .any(|n| n.trim_end_matches('.').ends_with(".cluster.local"));
    ensure!(
        !cluster_names || pod["dnsPolicy"] == "ClusterFirstWithHostNet",
        "cluster DNS names as targets, dnsPolicy {}",
        pod["dnsPolicy"]
    );
    // The image `cargo xtask image` tags, from this workspace's version.
    ensure!(
        c["image"] == format!("localhost/forwarder:{}", env!("CARGO_PKG_VERSION")),
        "image {} is not what `cargo xtask image` builds",
        c["image"]
    );
    // Rules path = ConfigMap mount + key, mounted as a directory (subPath
    // mounts never see updates).
    let mounts = c["volumeMounts"].as_array().context("volumeMounts")?;
    let mount = |name: &str| mounts.iter().find(|m| m["name"] == name);
    let rules_mount = mount("rules").context("rules mount")?;
    ensure!(
        rules_mount.get("subPath").is_none(),
        "subPath mounts are never updated"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        args == [
            "run",
            "--rules",
            &format!(
                "{}/rules.toml",
                rules_mount["mountPath"].as_str().unwrap_or("")
            )
        ],
        "{args:?}"
    );
    let volumes = pod["volumes"].as_array().context("volumes")?;
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(volume("rules")["configMap"]["name"] == cm["metadata"]["name"]);
    // Pins on the host's bpffs, propagated both ways; the status file on
    // the host where the probe (and `forwarder status`) read it.
    let bpf = mount("bpffs").context("bpffs mount")?;
    ensure!(bpf["mountPath"] == "/sys/fs/bpf" && bpf["mountPropagation"] == "Bidirectional");
    ensure!(volume("bpffs")["hostPath"]["path"] == "/sys/fs/bpf");
    ensure!(
        c["securityContext"]["privileged"] == true,
        "Bidirectional needs privileged"
    );
    let env = |name: &str| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name).cloned())
    };
    let run_dir = env("FORWARDER_RUN_DIR").context("FORWARDER_RUN_DIR")?;
    ensure!(mount("run").context("run mount")?["mountPath"] == run_dir["value"]);
    ensure!(
        env("FORWARDER_NODE_NAME").context("node name")?["valueFrom"]["fieldRef"]["fieldPath"]
            == "spec.nodeName"
    );
    let probe = c["readinessProbe"]["exec"]["command"]
        .as_array()
        .context("probe")?;
    ensure!(
        probe.iter().filter_map(Value::as_str).collect::<Vec<_>>()
            == ["/usr/bin/forwarder", "status", "--ready"]
    );
    let update = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    ensure!(
        update["maxSurge"] == 0,
        "two daemons on one node would share pins"
    );
    Ok(())
}
