//! The harness end to end: the real server, a real browser, one page.

use crate::browser::Browser;
use crate::helpers::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_smoke() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start(1280, 900).await;

    browser.goto(&format!("{}/healthz", app.base)).await;
    let body = browser.page_text().await;
    assert!(body.contains(r#""status":"ok""#), "{body}");
    assert_eq!(browser.current_url().await, format!("{}/healthz", app.base));

    browser.close().await;
    app.stop().await;
}
