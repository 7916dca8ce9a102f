//! The languages a plugin project may be written in.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};

/// A plugin project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with `coalition-sdk`, built to plain WebAssembly and turned into a component
    /// in-process.
    Rust,
    /// One ES module (`plugin.js`), built with componentize-js.
    JavaScript,
    /// One module (`app.py`), built with componentize-py.
    Python,
}

impl Lang {
    /// Every language, in the order the help lists them.
    pub const ALL: [Lang; 3] = [Lang::Rust, Lang::JavaScript, Lang::Python];

    /// The name `--lang` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::JavaScript => "js",
            Lang::Python => "python",
        }
    }

    /// The file that marks a project of this language, beside `plugin.toml`.
    pub fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::JavaScript => "plugin.js",
            Lang::Python => "app.py",
        }
    }

    /// The language of the project in `dir`, from its marker file.
    pub fn detect(dir: &Path) -> Result<Lang> {
        let found: Vec<Lang> = Lang::ALL
            .into_iter()
            .filter(|lang| dir.join(lang.marker()).is_file())
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "{} holds no Cargo.toml, plugin.js or app.py: not a plugin project",
                dir.display()
            ),
            _ => bail!(
                "{} holds more than one of Cargo.toml, plugin.js and app.py: which language?",
                dir.display()
            ),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "rust" | "rs" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::JavaScript),
            "python" | "py" => Ok(Lang::Python),
            other => Err(format!("unknown language {other:?}: rust, js or python")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_detection_needs_exactly_one_marker() {
        for lang in Lang::ALL {
            assert_eq!(lang.as_str().parse::<Lang>(), Ok(lang));
        }
        assert!("go".parse::<Lang>().is_err());
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(Lang::detect(dir.path()).is_err());
        std::fs::write(dir.path().join("app.py"), "").expect("write");
        assert_eq!(Lang::detect(dir.path()).expect("python"), Lang::Python);
        std::fs::write(dir.path().join("plugin.js"), "").expect("write");
        assert!(Lang::detect(dir.path()).is_err());
    }
}
