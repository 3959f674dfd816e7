//! The dependency rules of the workspace, read from `cargo metadata`: what
//! each crate must not depend on, directly or through another crate (normal
//! dependencies; dev-dependencies are free). The same rules are written at
//! each crate's root and in the README's map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// (crate, what it must not depend on, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "ndc-core",
        &["tokio", "tonic", "kube", "rocksdb", "openraft"],
        "the pure core: every rule, no I/O",
    ),
    (
        "ndc-store",
        &["tonic", "kube", "ndc-api", "ndc-server"],
        "persistence only, driven by openraft",
    ),
    (
        "ndc-api",
        &["ndc-store", "ndc-server", "openraft", "rocksdb"],
        "clients link it without the server",
    ),
    (
        "ndc-server",
        &["kube", "ndc-operator", "ndc-kube-sim", "ndc-crds"],
        "Kubernetes is the operator's business",
    ),
    (
        "ndc-storage",
        &["openraft", "kube", "rocksdb", "ndc-store", "ndc-server"],
        "drivers for the outside systems only",
    ),
    (
        "ndc-crds",
        &["ndc-operator", "ndc-kube-sim", "rocksdb"],
        "types and their YAML, no controllers",
    ),
    (
        "ndc-kube-sim",
        &["rocksdb", "ndc-store", "ndc-server", "ndc-api"],
        "an API server in memory, apart from the control plane",
    ),
    (
        "ndc-operator",
        &["rocksdb", "ndc-store", "ndc-server"],
        "it uses the typed gRPC API, never the store",
    ),
    (
        "ndc-agent",
        &["kube", "rocksdb", "ndc-store", "ndc-server"],
        "it reports to the control plane through its API",
    ),
];

/// Folders whose crates must not depend on crates in the other folders.
/// `testkit/` is for dev-dependencies only: no shipped crate links it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "control-plane",
            "operators",
            "storage",
            "crds",
            "ndc",
            "bench",
            "agents",
            "testkit",
        ],
    ),
    (
        "control-plane",
        &["operators", "ndc", "bench", "agents", "testkit"],
    ),
    (
        "storage",
        &[
            "control-plane",
            "operators",
            "ndc",
            "bench",
            "agents",
            "testkit",
        ],
    ),
    ("operators", &["ndc", "bench", "testkit"]),
    ("agents", &["operators", "ndc", "bench", "testkit"]),
    ("crds", &["testkit"]),
    ("bench", &["testkit"]),
    ("ndc", &["testkit"]),
];

struct Graph {
    /// Package id → (name, folder of the workspace it sits in, if a member).
    packages: BTreeMap<String, (String, Option<String>)>,
    /// Package id → ids of its normal dependencies.
    deps: BTreeMap<String, Vec<String>>,
}

/// This machine's target triple (`rustc -vV`): the dependency graph is
/// read for it, so crates only other platforms use need not be fetched.
fn host_triple() -> Result<String> {
    let out = std::process::Command::new("rustc").arg("-vV").output()?;
    String::from_utf8(out.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")
}

fn metadata() -> Result<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .arg("--filter-platform")
        .arg(host_triple()?)
        .current_dir(&root)
        .output()?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn graph(meta: &serde_json::Value) -> Result<Graph> {
    let root = Path::new(meta["workspace_root"].as_str().context("workspace_root")?);
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .context("workspace_members")?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let mut packages = BTreeMap::new();
    for p in meta["packages"].as_array().context("packages")? {
        let id = p["id"].as_str().context("id")?;
        let name = p["name"].as_str().context("name")?.to_string();
        let folder = members.contains(id).then(|| {
            Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .strip_prefix(root)
                .ok()
                .and_then(|rel| rel.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        packages.insert(id.to_string(), (name, folder));
    }
    let mut deps = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().context("resolve")? {
        let id = node["id"].as_str().context("node id")?.to_string();
        let normal = node["deps"]
            .as_array()
            .context("deps")?
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_string))
            .collect();
        deps.insert(id, normal);
    }
    Ok(Graph { packages, deps })
}

impl Graph {
    fn id_of(&self, name: &str) -> Option<&String> {
        self.packages
            .iter()
            .find(|(_, (n, folder))| n == name && folder.is_some())
            .map(|(id, _)| id)
    }

    /// Every package `id` depends on, with the path that brings it in.
    fn closure(&self, id: &str) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut todo = vec![(id.to_string(), vec![self.name(id)])];
        while let Some((at, path)) = todo.pop() {
            for d in self.deps.get(&at).into_iter().flatten() {
                if seen.contains_key(d) {
                    continue;
                }
                let mut p = path.clone();
                p.push(self.name(d));
                seen.insert(d.clone(), p.clone());
                todo.push((d.clone(), p));
            }
        }
        seen
    }

    fn name(&self, id: &str) -> String {
        self.packages
            .get(id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| id.to_string())
    }
}

/// Every broken rule, as a line saying which path brings the dependency in.
fn broken(g: &Graph) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (krate, forbidden, why) in RULES {
        let id = g
            .id_of(krate)
            .with_context(|| format!("no crate {krate}"))?;
        for (dep, path) in g.closure(id) {
            if forbidden.contains(&g.name(&dep).as_str()) {
                out.push(format!(
                    "{krate} must not depend on {} ({why}): {}",
                    g.name(&dep),
                    path.join(" → ")
                ));
            }
        }
    }
    for (id, (name, folder)) in &g.packages {
        let Some(folder) = folder else { continue };
        let Some((_, banned)) = LAYERS.iter().find(|(f, _)| f == folder) else {
            continue;
        };
        for (dep, path) in g.closure(id) {
            if let Some((_, Some(dep_folder))) = g.packages.get(&dep) {
                if banned.contains(&dep_folder.as_str()) {
                    out.push(format!(
                        "{name} (in {folder}/) must not depend on a crate in {dep_folder}/: {}",
                        path.join(" → ")
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn every_crate_keeps_its_dependency_rules() -> Result<()> {
    let g = graph(&metadata()?)?;
    let broken = broken(&g)?;
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    Ok(())
}

#[test]
fn a_forbidden_dependency_is_found_with_the_path_that_brings_it() -> Result<()> {
    let mut g = graph(&metadata()?)?;
    // Give the core a dependency on the server, which brings tokio and tonic.
    let core = g.id_of("ndc-core").context("core")?.clone();
    let server = g.id_of("ndc-server").context("server")?.clone();
    g.deps.entry(core).or_default().push(server);
    let broken = broken(&g)?;
    for want in [
        "ndc-core must not depend on tokio",
        "ndc-core must not depend on tonic",
        "ndc-core (in core/) must not depend on a crate in control-plane/: ndc-core → ndc-server",
    ] {
        assert!(
            broken.iter().any(|b| b.starts_with(want)),
            "{want} not in:\n{}",
            broken.join("\n")
        );
    }
    Ok(())
}
