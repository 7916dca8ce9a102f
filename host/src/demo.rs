//! The demo coalition seeded by `coalition serve --demo`.

use crate::api::AppState;

/// Seeds the demo coalition if the database is empty.
pub async fn seed(_state: &AppState) -> anyhow::Result<()> {
    Ok(())
}
