//! The layering of the crate, checked on every test run: each module may import only its own
//! layer and the layers below it, and nothing below the interfaces may speak HTTP or read the
//! whole configuration. See the crate doc's `# Layout` and `docs/ARCHITECTURE.md`.
//!
//! It reads the source files themselves: a module path written anywhere outside the file's tests
//! (`crate::<layer>::…`, in a `use` line or inline) counts as an import.

use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: &[&str] = &[
    "foundation",
    "ledger",
    "domain",
    "plugins",
    "workflows",
    "interfaces",
    "app",
];

/// What no file below the interfaces may name: the web framework, the API's state and status
/// codes, the whole configuration (each layer gets its own section), and the command line
/// (its parser, and printing to the terminal: lower layers log through `tracing`).
const HTTP_AND_WHOLE_CONFIG: &[&str] = &[
    "axum",
    "AppState",
    "StatusCode",
    "tower_http",
    "utoipa_axum",
    "interfaces::config",
    "clap::",
    "println!",
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The layer a source file belongs to: the first component of its path under `src/`.
fn layer_of(relative: &Path) -> Option<&'static str> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().copied().find(|l| *l == name)
}

/// The file's text up to its unit tests (by convention the last item of a file).
fn code_of(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Every layer named by a `crate::<layer>` path, including inside `use crate::{…}` groups.
fn layers_named(code: &str) -> Vec<(&'static str, usize)> {
    let mut found = Vec::new();
    for (line_no, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match after.strip_prefix('{') {
                Some(group) => group
                    .split([',', '}'])
                    .map(|n| n.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![after
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")],
            };
            for name in names {
                if let Some(layer) = LAYERS.iter().copied().find(|l| *l == name) {
                    found.push((layer, line_no + 1));
                }
            }
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(file, line, what)` for every import that breaks the layering.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let Some(layer) = layer_of(relative) else {
            continue; // lib.rs, main.rs and this check sit above every layer.
        };
        let own = rank(layer).expect("a layer");
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = code_of(&text);
        for (named, line) in layers_named(code) {
            if rank(named).expect("a layer") > own {
                out.push(format!(
                    "{}:{line}: {layer} imports the higher layer {named}",
                    relative.display()
                ));
            }
        }
        if own < rank("interfaces").expect("a layer") {
            for (line_no, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or("");
                for word in HTTP_AND_WHOLE_CONFIG {
                    if line.contains(word) {
                        out.push(format!(
                            "{}:{}: {layer} names `{word}`, which belongs to the interfaces",
                            relative.display(),
                            line_no + 1
                        ));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import_and_http_in_a_lower_layer() {
    let dir = std::env::temp_dir().join(format!("layers-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("domain")).expect("mkdir");
    std::fs::write(
        dir.join("domain/members.rs"),
        "use crate::{foundation::store::Store, workflows::perks};\n\
         fn f(s: &crate::interfaces::api::AppState) {}\n\
         #[cfg(test)]\nmod tests { use crate::app::server; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("foundation.rs"),
        "// crate::app is only mentioned in a comment\n",
    )
    .expect("write");
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(
        found,
        vec![
            "domain/members.rs:1: domain imports the higher layer workflows",
            "domain/members.rs:2: domain imports the higher layer interfaces",
            "domain/members.rs:2: domain names `AppState`, which belongs to the interfaces",
        ],
        "{found:#?}"
    );
}
