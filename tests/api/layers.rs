//! Dependencies point one way (docs/architecture.md): each module's source
//! is read and its `crate::…` imports checked against what it must not use.
//! A new import that breaks a layer fails here, not in review.

use std::path::{Path, PathBuf};

/// (module, modules it must not import).
const RULES: &[(&str, &[&str])] = &[
    (
        "verifier",
        &[
            "accounts",
            "app",
            "audit",
            "cli",
            "clock",
            "config",
            "http",
            "keys",
            "metrics",
            "store",
            "telemetry",
            "token",
        ],
    ),
    (
        "store",
        &["accounts", "app", "audit", "cli", "http", "token"],
    ),
    (
        "audit",
        &["accounts", "app", "cli", "http", "keys", "token"],
    ),
    ("keys", &["accounts", "app", "cli", "http", "token"]),
    ("accounts", &["app", "cli", "http", "keys", "token"]),
    ("token", &["app", "cli", "http"]),
    ("http", &["app", "cli"]),
    ("metrics", &["app", "cli", "http", "token"]),
    ("config", &["app", "cli", "http", "token"]),
    ("clock", &["app", "cli", "http", "token"]),
];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn modules_never_import_the_layers_above_them() {
    let mut broken = Vec::new();
    for (module, forbidden) in RULES {
        let files = sources(module);
        assert!(!files.is_empty(), "no sources for {module}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for other in *forbidden {
                let needle = format!("crate::{other}::");
                let braced = format!("crate::{{{other}");
                if text.contains(&needle) || text.contains(&braced) {
                    broken.push(format!("{} imports crate::{other}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}
