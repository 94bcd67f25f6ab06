//! Tidy checks over the workspace's sources: rules of the project's style that the
//! compiler and clippy do not enforce. Reads files only; builds nothing.

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
