//! Tidy checks over the workspace's sources: rules of the project's style and
//! architecture that the compiler and clippy do not enforce (module docs, which crate
//! may depend on which). Reads files only; builds nothing.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn workspace_crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("crates"))
}

/// Every `.rs` file under `dir`, skipping build output and test fixtures (data, not code).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && name != "fixtures" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The `//!` lines a file opens with, after any leading blank lines.
fn opening_doc(text: &str) -> Option<&str> {
    let first = text.lines().find(|line| !line.trim().is_empty())?;
    first.starts_with("//!").then_some(first)
}

#[test]
fn opening_doc_is_recognised() {
    assert!(opening_doc("//! Owns the thing.\nuse x;").is_some());
    assert!(opening_doc("\n//! Owns the thing.\n").is_some());
    assert!(opening_doc("// a plain comment\n//! late\n").is_none());
    assert!(opening_doc("use std::io;\n").is_none());
    assert!(opening_doc("").is_none());
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&workspace_crates(), &mut files);
    assert!(
        files.len() > 50,
        "found only {} source files: wrong root?",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            opening_doc(&text).is_none()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` doc saying what they own and what they must \
         not touch:\n{}",
        missing.join("\n")
    );
}

/// The names listed in one `[section]` of a Cargo.toml (`name = ...` or `name.workspace`).
fn section_names(manifest: &str, section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.split(['=', '.', ' ']).next() {
            names.push(name.trim().to_owned());
        }
    }
    names
}

/// Which workspace crates each crate may use (ARCHITECTURE.md, "Invariants"). The pure
/// crates come first; nothing but the binary, the test kit and the bench sits on top.
const ALLOWED: &[(&str, &[&str])] = &[
    ("types", &[]),
    ("state", &["types"]),
    ("scheduler", &["types"]),
    ("orchestrator", &["types", "scheduler"]),
    ("pki", &["types"]),
    ("driver", &["types"]),
    ("mesh", &[]),
    ("raft", &["types", "state"]),
    ("api", &["types", "state", "pki"]),
    (
        "manager",
        &[
            "types",
            "state",
            "raft",
            "pki",
            "api",
            "orchestrator",
            "scheduler",
        ],
    ),
    ("worker", &["types", "state", "pki", "api", "driver"]),
    ("cli", &["types", "api"]),
    (
        "hoist",
        &[
            "types", "state", "raft", "pki", "manager", "worker", "api", "cli", "driver", "mesh",
        ],
    ),
    ("testkit", &["mesh", "types", "api"]),
    ("bench", &["testkit", "api", "types"]),
];

/// Crates that make decisions as plain functions over data: no runtime, no I/O crates.
const PURE: &[&str] = &["types", "state", "scheduler", "orchestrator"];
const IO_CRATES: &[&str] = &[
    "tokio", "hyper", "axum", "reqwest", "redb", "openraft", "bollard", "rustls", "nix",
];

fn manifest(krate: &str) -> String {
    let path = workspace_crates().join(krate).join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn section_names_reads_plain_and_workspace_entries() {
    let toml = "[package]\nname = \"x\"\n[dependencies]\n# why\nhoist-types.workspace = true\nserde = { version = \"1\" }\n\n[dev-dependencies]\ntempfile = \"3\"\n";
    assert_eq!(
        section_names(toml, "[dependencies]"),
        ["hoist-types", "serde"]
    );
    assert_eq!(section_names(toml, "[dev-dependencies]"), ["tempfile"]);
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let mut crates: Vec<String> = std::fs::read_dir(workspace_crates())
        .expect("the crates directory")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry
                .path()
                .join("Cargo.toml")
                .exists()
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    crates.sort();
    let mut wrong = Vec::new();
    for krate in &crates {
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| name == krate) else {
            wrong.push(format!(
                "{krate}: not in the layering table (tests/tidy.rs and ARCHITECTURE.md)"
            ));
            continue;
        };
        let text = manifest(krate);
        for dependency in section_names(&text, "[dependencies]") {
            if let Some(internal) = dependency.strip_prefix("hoist-") {
                if !allowed.contains(&internal) {
                    wrong.push(format!("{krate} depends on {internal}"));
                }
            }
            if PURE.contains(&krate.as_str()) && IO_CRATES.contains(&dependency.as_str()) {
                wrong.push(format!("{krate} is pure but depends on {dependency}"));
            }
        }
        for dependency in section_names(&text, "[dev-dependencies]") {
            if dependency == "hoist-bench" {
                wrong.push(format!("{krate} depends on the bench"));
            }
        }
    }
    assert!(crates.len() >= 15, "found only {crates:?}");
    assert!(
        wrong.is_empty(),
        "the layering is broken:\n{}",
        wrong.join("\n")
    );
}

/// Test files that send raw requests on purpose (authentication, limits, bad input),
/// and so spell the wire paths themselves.
const RAW_REQUEST_TESTS: &[&str] = &[
    "hoist/tests/bad_input.rs",
    "hoist/tests/ca_rotation.rs",
    "hoist/tests/cluster_core.rs",
    "hoist/tests/durability.rs",
    "hoist/tests/hardening_reports.rs",
    "hoist/tests/limits.rs",
    "hoist/tests/membership.rs",
    "hoist/tests/roles.rs",
];

/// The control API's version prefix, spelled in two halves so this file does not
/// match its own check (nor the issue's `grep`).
const PREFIX: &str = concat!("/", "v1");

/// Whether a line spells a control API path: the prefix followed by `/` or a quote.
fn spells_api_path(line: &str) -> bool {
    line.match_indices(PREFIX).any(|(at, _)| {
        matches!(
            line[at + PREFIX.len()..].chars().next(),
            Some('/') | Some('"')
        )
    })
}

#[test]
fn spells_api_path_finds_paths_only() {
    assert!(spells_api_path(&format!("get(\"{PREFIX}/nodes\")")));
    assert!(spells_api_path(&format!("prefix: \"{PREFIX}\"")));
    assert!(!spells_api_path(&format!("prefix: \"{PREFIX}0\"")));
    assert!(!spells_api_path("no path here"));
}

#[test]
fn only_the_api_crate_spells_the_wire_paths() {
    let root = workspace_crates();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&root).unwrap_or(path);
        let relative = relative.to_string_lossy();
        if relative.starts_with("api/") || RAW_REQUEST_TESTS.contains(&relative.as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a source file");
        for (n_line, line) in text.lines().enumerate() {
            if spells_api_path(line) {
                found.push(format!("{relative}:{}: {}", n_line + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "wire paths belong to crates/api (hoist_api::endpoint); spelled elsewhere:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_daemon_file_is_longer_than_600_lines() {
    let dir = workspace_crates().join("hoist/src/daemon");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path)
                .expect("a source file")
                .lines()
                .count();
            (lines > 600).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "one job per daemon file: {long:?}");
}
