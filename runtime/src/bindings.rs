//! One binding module per released WIT package, each adapting its generated types to the
//! version-independent [`crate::model`] (the zed layout). Adding `coalition:plugin@0.2.0`
//! means: freeze its folder under `wit/`, add `v0_2_0.rs` with `bindgen!` and conversions,
//! add a [`WitVersion`] variant and a [`PluginPre`] arm. Older modules keep converting into
//! the newest model, filling new fields with their neutral value.

pub(crate) mod v0_1_0;

use serde::{Deserialize, Serialize};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::Store;

use crate::model::{Invocation, PluginInfo};
use crate::plugin::HookArgs;
use crate::sandbox::CallState;

/// A supported `coalition:plugin` WIT package version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WitVersion {
    /// `coalition:plugin@0.1.0`.
    #[serde(rename = "coalition:plugin@0.1.0")]
    V0_1_0,
}

impl WitVersion {
    /// Every supported version, oldest first.
    pub const ALL: [WitVersion; 1] = [WitVersion::V0_1_0];

    /// The package id as written in a manifest, for example `coalition:plugin@0.1.0`.
    pub fn package_id(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => "coalition:plugin@0.1.0",
        }
    }

    /// Parses a manifest's `wit` value.
    pub fn from_package_id(id: &str) -> Option<WitVersion> {
        WitVersion::ALL.into_iter().find(|v| v.package_id() == id)
    }

    /// The interface a component of this version must export.
    pub fn hooks_export(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => "coalition:plugin/hooks@0.1.0",
        }
    }

    /// Interfaces of this version a component may import.
    pub fn host_imports(self) -> &'static [&'static str] {
        match self {
            // `types` appears as an import because `hooks` uses its types; it has no functions.
            WitVersion::V0_1_0 => &[
                "coalition:plugin/host@0.1.0",
                "coalition:plugin/types@0.1.0",
            ],
        }
    }
}

/// Adds the `host` interface of every supported version to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)
}

/// A hook's own error, before attribution.
pub(crate) enum GuestError {
    NotImplemented,
    Failure(crate::model::HookFailure),
}

/// A pre-linked component of some supported version.
#[derive(Clone)]
pub(crate) enum PluginPre {
    V0_1_0(v0_1_0::Pre),
}

impl PluginPre {
    pub fn new(version: WitVersion, pre: InstancePre<CallState>) -> wasmtime::Result<PluginPre> {
        match version {
            WitVersion::V0_1_0 => Ok(PluginPre::V0_1_0(v0_1_0::Pre::new(pre)?)),
        }
    }

    /// Instantiates into `store` and calls `describe`.
    pub fn describe(&self, store: &mut Store<CallState>) -> wasmtime::Result<PluginInfo> {
        match self {
            PluginPre::V0_1_0(pre) => v0_1_0::describe(pre, store),
        }
    }

    /// Instantiates into `store` and calls one hook.
    pub fn call(
        &self,
        store: &mut Store<CallState>,
        invocation: &Invocation,
        args: &HookArgs<'_>,
    ) -> wasmtime::Result<Result<crate::model::HookOutput, GuestError>> {
        match self {
            PluginPre::V0_1_0(pre) => v0_1_0::call(pre, store, invocation, args),
        }
    }
}
