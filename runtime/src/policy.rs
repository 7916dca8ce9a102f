//! Failure policy per hook.
//!
//! Showing perks fails open: [`list_perks_all`] returns the perks of every healthy plugin and
//! the failures of the others, so one broken brand never empties a member's perk page.
//! Redemption, coupons and settlement fail closed: their methods on
//! [`LoadedPlugin`](crate::LoadedPlugin) return the error and the host commits nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::PluginError;
use crate::model::{Config, Hook, Invocation, MemberContext, Perk};
use crate::plugin::{CallContext, Decision, LoadedPlugin};

/// One plugin's outcome, written by whichever worker ran it.
type Slot = Mutex<Option<Result<Decision<Vec<Perk>>, PluginError>>>;

/// Perks of one plugin in a listing.
#[derive(Debug, Clone)]
pub struct PluginPerks {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Its validated perks and receipt.
    pub decision: Decision<Vec<Perk>>,
}

/// The outcome of listing perks across plugins.
#[derive(Debug, Clone, Default)]
pub struct PerkListing {
    /// Perks per healthy plugin, in the order the plugins were given.
    pub perks: Vec<PluginPerks>,
    /// One error per plugin that failed (including an open circuit), in the same order.
    pub failures: Vec<PluginError>,
}

impl PerkListing {
    /// All perks, flattened, in plugin order.
    pub fn all_perks(&self) -> impl Iterator<Item = &Perk> {
        self.perks.iter().flat_map(|p| p.decision.value.iter())
    }
}

/// Lists perks from every plugin that implements `list-perks`, in parallel on scoped threads
/// (at most one per core), failing open. Blocking: call from a blocking thread.
///
/// `plugins` pairs each plugin with its admin config; plugins without `list-perks` are skipped.
pub fn list_perks_all(
    plugins: &[(LoadedPlugin, Config)],
    invocation: &Invocation,
    member: &MemberContext,
) -> PerkListing {
    let candidates: Vec<&(LoadedPlugin, Config)> = plugins
        .iter()
        .filter(|(plugin, _)| plugin.implements(Hook::ListPerks))
        .collect();
    let results: Vec<Slot> = candidates.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((plugin, config)) = candidates.get(i) else {
            break;
        };
        let ctx = CallContext {
            invocation: invocation.clone(),
            config: config.clone(),
        };
        let result = plugin.list_perks(&ctx, member);
        if let Some(slot) = results.get(i) {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
        }
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(candidates.len());
    if workers <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 1..workers {
                scope.spawn(work);
            }
            work();
        });
    }

    let mut listing = PerkListing::default();
    for ((plugin, _), slot) in candidates.iter().zip(results) {
        match slot
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(Ok(decision)) => listing.perks.push(PluginPerks {
                plugin: plugin.name().to_string(),
                version: plugin.version().to_string(),
                decision,
            }),
            Some(Err(error)) => listing.failures.push(error),
            // Unreachable: every index below `candidates.len()` is claimed by some worker.
            None => {}
        }
    }
    listing
}
