//! The partner kit: what `coalition plugin new` writes and how `coalition plugin build` turns a
//! plugin project in Rust, JavaScript or Python into a component. `cargo xtask build-plugins`
//! builds the repository's JavaScript and Python examples through the same code.
//!
//! # Layout
//! - [`lang`]: the three languages, and how a project's language is recognised;
//! - [`scaffold`]: `new`: a project with its manifest, code, fixtures, one test and a README;
//! - [`build`]: a project to `target/coalition/<name>.wasm`;
//! - [`tools`]: the pinned componentize-js and componentize-py, installed on first use into a
//!   cache folder by this code (never by hand).

pub mod build;
pub mod lang;
pub mod scaffold;
pub mod tools;

pub use build::{build, component_path, Built};
pub use lang::Lang;

/// The contract version new projects are written against.
pub const WIT_VERSION: &str = "coalition:plugin@0.1.0";

/// The WIT of [`WIT_VERSION`], as the SDK crate carries it (a test holds it to `wit/`).
pub const WIT_TEXT: &str = include_str!("../../wit/coalition-plugin@0.1.0/plugin.wit");

/// The folder name of [`WIT_VERSION`] inside a project's `wit/`.
pub const WIT_DIR: &str = "coalition-plugin@0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_wit_is_the_frozen_release() {
        let frozen = include_str!("../../../wit/coalition-plugin@0.1.0/plugin.wit");
        assert_eq!(super::WIT_TEXT, frozen);
    }
}
