//! A real headless Chromium for the console's tests, driven through chromedriver.
//!
//! [`Browser::start`] runs `/usr/bin/chromedriver` on a free local port and opens a WebDriver
//! session in `/usr/bin/chromium` (headless, a fresh profile in a temp directory). Both come
//! from the pinned Debian packages that `cargo xtask setup-browser` installs (`cargo xtask test`
//! does it first); without them the harness panics rather than skip a test.
//!
//! The methods are test helpers: each panics with the selector or URL at hand when the browser
//! says no. The console navigates with plain HTML forms (POST, then a redirect), so
//! [`Browser::click_and_wait`] and [`Browser::submit_form`] wait until a new document has
//! loaded, with a generous ceiling ([`NAVIGATION_TIMEOUT`]) rather than a time to assert on.
//!
//! Dropping a `Browser` ends its session and stops chromedriver; [`Browser::close`] does the
//! same and reports errors.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The browser, from the Debian package `chromium`.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its WebDriver server, from the Debian package `chromium-driver` (same version).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer, and the browser to start, on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The ceiling of a wait for a navigation or an element: far above any honest page load,
/// even of a debug build on a loaded two-core machine.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// The window property that marks the current document, so a wait sees a new one arrive even
/// when the URL stays the same (a form that posts back to its own page).
const MARKER: &str = "__coalitionTestDocument";

/// A cookie as the browser stores it, for tests of the session cookie's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieInfo {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None` as the browser reports it; `None` if it reports nothing.
    pub same_site: Option<String>,
}

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    client: Option<Client>,
    driver: Option<Child>,
    port: u16,
    session_id: Option<String>,
    /// The browser profile and chromedriver's log; removed on drop.
    workdir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose page viewport is exactly `width` x
    /// `height` CSS pixels (see [`Self::set_size`]).
    pub async fn start(width: u32, height: u32) -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing (Debian package `{package}`): run `cargo xtask setup-browser` \
                 (cargo xtask test installs it)"
            );
        }
        let workdir = tempfile::tempdir().expect("temp dir for the browser");
        let port = free_port();
        let log = File::create(workdir.path().join("chromedriver.log")).expect("chromedriver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chromedriver log"))
            .stderr(log)
            // Its own process group: dropping the browser stops chromedriver and whatever
            // browser processes it left behind, and nothing else.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {CHROMEDRIVER}: {err}"));
        let mut browser = Browser {
            client: None,
            driver: Some(driver),
            port,
            session_id: None,
            workdir,
        };
        browser.wait_for_driver().await;

        let profile = browser.workdir.path().join("profile");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&browser.driver_url())
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot open a Chromium session through chromedriver: {err}\n{}",
                    browser.driver_log()
                )
            });
        browser.session_id = client.session_id().await.expect("session id");
        browser.client = Some(client);
        browser.set_size(width, height).await;
        browser
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    /// The URL of the page shown.
    pub async fn current_url(&self) -> String {
        self.client()
            .current_url()
            .await
            .expect("current URL")
            .to_string()
    }

    /// The title of the page shown.
    pub async fn title(&self) -> String {
        self.client().title().await.expect("page title")
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|err| panic!("cannot read the text of `{css}`: {err}"))
    }

    /// The rendered text of the whole page (`body`).
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// The page's HTML source.
    pub async fn source(&self) -> String {
        self.client().source().await.expect("page source")
    }

    /// The value of attribute `name` of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|err| panic!("cannot read attribute `{name}` of `{css}`: {err}"))
    }

    /// Whether any element matches `css`.
    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("cannot look for `{css}`: {err}"))
            .is_empty()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("cannot look for `{css}`: {err}"))
            .len()
    }

    /// Waits until an element matches `css` (at most [`NAVIGATION_TIMEOUT`]).
    pub async fn wait_for(&self, css: &str) {
        self.client()
            .wait()
            .at_most(NAVIGATION_TIMEOUT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| {
                panic!("no `{css}` within {NAVIGATION_TIMEOUT:?}: {err}");
            });
    }

    /// Replaces the value of the field matching `css` with `value`, typed as keystrokes.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|err| panic!("cannot clear `{css}`: {err}"));
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|err| panic!("cannot type into `{css}`: {err}"));
    }

    /// Chooses the option whose value is `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|err| panic!("cannot choose `{value}` in `{css}`: {err}"));
    }

    /// Clicks the first element matching `css`, without waiting for what follows.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|err| panic!("cannot click `{css}`: {err}"));
    }

    /// Clicks the first element matching `css` (a link or a form's button) and waits until the
    /// page it leads to has loaded.
    pub async fn click_and_wait(&self, css: &str) {
        self.mark_document().await;
        self.click(css).await;
        self.wait_for_new_document(&format!("clicking `{css}`"))
            .await;
    }

    /// Submits the form matching `css` as its submit button would (`requestSubmit`: validation
    /// and submit handlers run) and waits until the page it leads to has loaded.
    pub async fn submit_form(&self, css: &str) {
        let form = self.find(css).await;
        self.mark_document().await;
        let element = serde_json::to_value(&form).expect("element reference");
        self.client()
            .execute("arguments[0].requestSubmit();", vec![element])
            .await
            .unwrap_or_else(|err| panic!("cannot submit `{css}`: {err}"));
        self.wait_for_new_document(&format!("submitting `{css}`"))
            .await;
    }

    /// Makes the page's viewport exactly `width` x `height` CSS pixels, as a phone or a
    /// desktop screen of that size shows it. This is device-metrics emulation through
    /// chromedriver's DevTools endpoint, because a window cannot be made narrower than about
    /// 500 px. Below 600 px the page is also told it is on a mobile device.
    pub async fn set_size(&self, width: u32, height: u32) {
        let session = self.session_id.as_deref().expect("a session");
        let url = format!("{}/session/{session}/goog/cdp/execute", self.driver_url());
        let body = json!({
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": { "width": width, "height": height, "deviceScaleFactor": 1,
                        "mobile": width < 600 },
        });
        let answer = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("cannot set the viewport to {width}x{height}: {err}"));
        assert!(
            answer.status().is_success(),
            "cannot set the viewport to {width}x{height}: {}",
            answer.text().await.unwrap_or_default()
        );
    }

    /// Saves a PNG of the window as `docs/console/<name>.png` under the repository root and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("docs")
            .join("console");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        path
    }

    /// Runs `js` in the page (`return …` gives a value back); `args` are its `arguments`.
    pub async fn execute(&self, js: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(js, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{js}"))
    }

    /// Every cookie the browser holds for the page shown.
    pub async fn cookies(&self) -> Vec<CookieInfo> {
        self.client()
            .get_all_cookies()
            .await
            .expect("cookies")
            .iter()
            .map(|cookie| CookieInfo {
                name: cookie.name().to_owned(),
                value: cookie.value().to_owned(),
                path: cookie.path().map(str::to_owned),
                http_only: cookie.http_only().unwrap_or(false),
                secure: cookie.secure().unwrap_or(false),
                same_site: cookie.same_site().map(|s| s.to_string()),
            })
            .collect()
    }

    /// The cookie called `name` for the page shown, if the browser holds one.
    pub async fn cookie(&self, name: &str) -> Option<CookieInfo> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// The underlying WebDriver client, for what the helpers above do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.expect("end the browser session");
        }
        self.session_id = None;
        self.stop_driver();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element matches `{css}`: {err}"))
    }

    /// Marks the current document, so [`Self::wait_for_new_document`] can tell it is gone.
    async fn mark_document(&self) {
        self.execute(&format!("window.{MARKER} = true;"), vec![])
            .await;
    }

    /// Waits until the marked document has been replaced by a fully loaded one.
    async fn wait_for_new_document(&self, what: &str) {
        let script = format!("return document.readyState === 'complete' && !window.{MARKER};");
        let deadline = Instant::now() + NAVIGATION_TIMEOUT;
        loop {
            // While the old page unloads, a script may fail: look again.
            if let Ok(Value::Bool(true)) = self.client().execute(&script, vec![]).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page loaded within {NAVIGATION_TIMEOUT:?} after {what} (still at {})",
                self.current_url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn driver_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until chromedriver answers `/status` as ready.
    async fn wait_for_driver(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("{}/status", self.driver_url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(resp) = client.get(&url).send().await {
                if let Ok(status) = resp.json::<Value>().await {
                    if status["value"]["ready"] == Value::Bool(true) {
                        return;
                    }
                }
            }
            if let Some(exit) = self
                .driver
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!("{CHROMEDRIVER} exited with {exit}\n{}", self.driver_log());
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} did not answer within {START_TIMEOUT:?}\n{}",
                self.driver_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// chromedriver's output so far, for failure messages.
    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.workdir.path().join("chromedriver.log"))
            .unwrap_or_default();
        format!("chromedriver log:\n{log}")
    }

    /// Stops chromedriver and any process it left in its group.
    fn stop_driver(&mut self) {
        if let Some(mut child) = self.driver.take() {
            // The group's id is chromedriver's pid (`process_group(0)`).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never reached `close`: end the session with a plain request
        // (Drop cannot await, and the runtime may be gone), so the browser quits cleanly.
        if let Some(session) = self.session_id.take() {
            delete_session(self.port, &session);
        }
        self.client = None;
        self.stop_driver();
    }
}

/// `DELETE /session/<id>` on chromedriver over a blocking socket, bounded by short timeouts.
fn delete_session(port: u16, session: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let timeout = Some(Duration::from_secs(10));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // chromedriver answers once the browser has quit; the first bytes are enough (it keeps
        // the connection open after its answer).
        let mut answer = [0_u8; 512];
        let _ = stream.read(&mut answer);
    }
}

/// A local port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}
