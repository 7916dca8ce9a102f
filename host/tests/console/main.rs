//! Tests of the web console in a real headless Chromium (see [`browser`]): one binary, the
//! server started by the API tests' helpers on a throwaway SQLite database.

#[path = "../api/helpers.rs"]
mod helpers;
// Brands, keys and members over the API, to set up what the console shows.
#[path = "../api/fixtures.rs"]
mod fixtures;

mod browser;

mod flows;
mod smoke;
