//! The inspector (`GET /ui`) in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver` + `fantoccini`), checking what a person would see and do — the objects
//! listed, a call made with an HTTP client appearing in the live log, rollback and migrate from
//! the page, the admin token asked for and used.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup.sh` installs them). Outside
//! CI a test without them says so and returns; in CI (`CI` set) their absence is a failure.
//! Each test runs its own chromedriver on a loopback port it reads from chromedriver's output,
//! in a process group of its own that is killed when the test ends, however it ends. A PNG of
//! each page is written to the test's temporary directory (and, with `OP_UI_SCREENSHOTS=DIR`,
//! copied there).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to say it listens.
const DRIVER_START: Duration = Duration::from_secs(30);
/// How long the page may take to show what a test waits for.
const SHOW: Duration = Duration::from_secs(15);

/// A chromedriver process (with the Chromium it starts) in its own process group.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver on a port it picks and waits for "started successfully on port N".
    fn start() -> Driver {
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let stdout = child.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to the end, so chromedriver never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut driver = Driver { child, port: 0 };
        let deadline = Instant::now() + DRIVER_START;
        while driver.port == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromedriver did not say it listens: {e}"));
            if let Some(port) = line.split("started successfully on port ").nth(1) {
                driver.port = port.trim_end_matches('.').trim().parse().expect("port");
            }
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group: chromedriver and every Chromium process it started.
        let group = self.child.id() as i32;
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Whether the browser is installed; outside CI, `None` after saying why the test is skipped.
fn browser_installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing (apt-get install chromium chromium-driver, or scripts/setup.sh)",
        missing.join(" and ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("the inspector's browser tests need Chromium in CI: {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// At most this many browsers run at once (each is a few hundred MB). A test takes its browser
/// before its stations, always in that order, so waiting for one never holds up the other.
const MAX_BROWSERS: usize = 2;
static BROWSERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static BROWSER_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// One of the [`MAX_BROWSERS`] places, given back on drop.
struct BrowserSlot;

impl BrowserSlot {
    fn acquire() -> BrowserSlot {
        let mut running = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_BROWSERS {
            running = BROWSER_FREED
                .wait(running)
                .unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        BrowserSlot
    }
}

impl Drop for BrowserSlot {
    fn drop(&mut self) {
        *BROWSERS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        BROWSER_FREED.notify_one();
    }
}

/// A headless Chromium session; every method waits (bounded) for what it acts on.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    /// Kills the browser once the session is closed, before its profile is removed.
    _driver: Driver,
    /// The profile and the screenshots.
    dir: tempfile::TempDir,
    _slot: BrowserSlot,
}

/// The screen a browser shows pages on.
#[derive(Clone, Copy, PartialEq)]
enum Screen {
    /// A 1280 × 900 window.
    Desktop,
    /// A phone's 390 × 844 viewport (Chromium's device emulation: a window cannot be that narrow).
    Phone,
}

impl Browser {
    /// A fresh browser with a desktop-sized window; `None` when skipped (see [`browser_installed`]).
    fn open() -> Option<Browser> {
        Browser::open_on(Screen::Desktop)
    }

    /// A fresh browser showing pages on `screen`; `None` when skipped.
    fn open_on(screen: Screen) -> Option<Browser> {
        if !browser_installed() {
            return None;
        }
        let slot = BrowserSlot::acquire();
        let dir = tempfile::Builder::new()
            .prefix("op-ui-")
            .tempdir()
            .expect("temp dir");
        let driver = Driver::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let profile = dir.path().join("profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(mut capabilities) = capabilities else {
            unreachable!()
        };
        if screen == Screen::Phone {
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1.0, "touch": true },
            });
        }
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = runtime
            .block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
            })
            .unwrap_or_else(|e| panic!("a Chromium session from chromedriver at {url}: {e}"));
        println!("browser files in {}", dir.path().display());
        Some(Browser {
            runtime,
            client: Some(client),
            dir,
            _driver: driver,
            _slot: slot,
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Loads `url`.
    fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// The text of the first element matching `css`, once `ok` accepts it.
    #[track_caller]
    fn text_when(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let found = poll_for(SHOW, || {
            let text = self.runtime.block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.text().await
            });
            last = Some(text.as_ref().map_err(|e| e.to_string()).cloned());
            text.ok().filter(|t| ok(t))
        });
        found.unwrap_or_else(|| {
            self.screenshot("failed");
            panic!("timed out after {SHOW:?} waiting for {css} {what}; last: {last:?}")
        })
    }

    /// Waits until `css` shows exactly `text`.
    #[track_caller]
    fn wait_text(&self, css: &str, text: &str) {
        self.text_when(css, &format!("to show {text:?}"), |t| t.trim() == text);
    }

    /// Waits until an element matching `css` is displayed.
    #[track_caller]
    fn wait_shown(&self, css: &str) {
        let shown = poll_for(SHOW, || {
            self.runtime
                .block_on(async {
                    let element = self.client().find(Locator::Css(css)).await?;
                    element.is_displayed().await
                })
                .ok()
                .filter(|shown| *shown)
        });
        if shown.is_none() {
            self.screenshot("failed");
            panic!("timed out after {SHOW:?} waiting for {css} to be shown");
        }
    }

    /// Waits until nothing matches `css`.
    #[track_caller]
    fn wait_gone(&self, css: &str) {
        let gone = poll_for(SHOW, || {
            let found = self
                .runtime
                .block_on(self.client().find_all(Locator::Css(css)));
            found.ok().filter(|all| all.is_empty()).map(|_| ())
        });
        if gone.is_none() {
            self.screenshot("failed");
            panic!("timed out after {SHOW:?} waiting for {css} to go");
        }
    }

    /// Clicks the element matching `css` once it is shown and enabled.
    #[track_caller]
    fn click(&self, css: &str) {
        self.wait_shown(css);
        let mut last = String::new();
        let clicked = poll_for(SHOW, || {
            let result = self.runtime.block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                if !element.is_enabled().await? {
                    return Ok(false);
                }
                element.click().await.map(|()| true)
            });
            match result {
                Ok(true) => Some(()),
                Ok(false) => None,
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        if clicked.is_none() {
            self.screenshot("failed");
            panic!("could not click {css}: {last}");
        }
    }

    /// Types `text` into the field matching `css` (cleared first).
    #[track_caller]
    fn fill(&self, css: &str, text: &str) {
        self.wait_shown(css);
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.clear().await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Chooses `value` in the `<select>` matching `css`, once it offers it.
    #[track_caller]
    fn select(&self, css: &str, value: &str) {
        self.wait_shown(css);
        let option = format!("{css} option[value=\"{value}\"]");
        let offered = poll_for(SHOW, || {
            let found = self
                .runtime
                .block_on(self.client().find_all(Locator::Css(&option)));
            found.ok().filter(|all| !all.is_empty()).map(|_| ())
        });
        if offered.is_none() {
            self.screenshot("failed");
            panic!("timed out after {SHOW:?} waiting for {css} to offer {value}");
        }
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.select_by_value(value).await
            })
            .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
    }

    /// The value of a JavaScript expression on the page.
    fn eval(&self, expression: &str) -> Value {
        self.runtime
            .block_on(
                self.client()
                    .execute(&format!("return {expression}"), Vec::new()),
            )
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
    }

    /// Writes a PNG of the window as `<name>.png` in the test's directory (and in
    /// `$OP_UI_SCREENSHOTS` when set); returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.png"));
        match self.runtime.block_on(self.client().screenshot()) {
            Ok(png) => {
                std::fs::write(&path, &png).expect("writing the screenshot");
                if let Some(dir) = std::env::var_os("OP_UI_SCREENSHOTS") {
                    let _ = std::fs::create_dir_all(&dir);
                    let _ = std::fs::write(Path::new(&dir).join(format!("{name}.png")), &png);
                }
                println!("screenshot: {}", path.display());
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Bounded: a hung browser is killed with its driver right after.
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
    }
}

/// Like [`poll`], but returns `None` at the deadline instead of panicking (the caller takes a
/// screenshot first).
fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The CSS selector of object `id`'s row in the overview.
fn object_row(id: &str) -> String {
    format!("#objects tr[data-object-id=\"{id}\"]")
}

#[test]
fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let st = Station::new();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = st.get(path).expect(200);
        let content_type = r.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    st.get("/ui/nope.js").expect_error(404, "not_found");
    let page = st.get("/ui").text();
    assert!(page.contains("name=\"viewport\""), "{page}");
}

#[test]
fn stats_give_each_objects_figures_on_this_station_and_across_the_cluster() {
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("hello", "hello");
    for _ in 0..3 {
        st.call("POST", "counter", "", Vec::new()).expect(200);
    }
    st.call("GET", "counter", "", Vec::new()).expect(200);
    let stats = st.get_json("/admin/stats");
    assert_eq!(stats["station"], st.station_id().as_str(), "{stats}");
    let objects = stats["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 2, "{stats}");
    let counter = objects
        .iter()
        .find(|o| o["id"] == "counter")
        .expect("counter");
    assert_eq!(counter["calls"], 4, "{counter}");
    assert_eq!(counter["by_status"]["2xx"], 4, "{counter}");
    assert_eq!(counter["traps"], 0, "{counter}");
    assert!(
        counter["p99_ms"].as_f64().is_some_and(|p| p > 0.0),
        "{counter}"
    );
    assert_eq!(counter["state_keys"], 1, "{counter}");
    let hello = objects.iter().find(|o| o["id"] == "hello").expect("hello");
    assert_eq!(hello["calls"], 0, "{hello}");
    assert_eq!(hello["p99_ms"], Value::Null, "{hello}");

    let cluster = st.get_json("/admin/stats?scope=cluster");
    assert_eq!(
        cluster["stations"].as_array().map(Vec::len),
        Some(1),
        "{cluster}"
    );
    assert_eq!(
        cluster["stations"][0]["objects"],
        stats["objects"].clone(),
        "{cluster}"
    );
    assert_eq!(cluster["unreachable"], json!([]), "{cluster}");
    st.get("/admin/stats?scope=galaxy")
        .expect_error(400, "bad_request");
}

#[test]
fn the_object_list_and_a_live_log_of_calls() {
    let Some(browser) = Browser::open() else {
        return;
    };
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("hello", "hello");
    let me = st.station_id();

    browser.goto(&format!("{}/ui", st.url));
    for id in ["counter", "hello"] {
        browser.wait_text(&format!("{} [data-field=\"version\"]", object_row(id)), "1");
        browser.wait_text(&format!("{} [data-field=\"home\"]", object_row(id)), &me);
    }
    let station = format!("#stations tr[data-station-id=\"{me}\"]");
    browser.wait_text(&format!("{station} [data-field=\"state\"]"), "alive");
    browser.wait_text(&format!("{station} [data-field=\"role\"]"), "leader");

    // Calls made with an HTTP client show in the figures (calls/s from two samples).
    for _ in 0..5 {
        st.call("POST", "counter", "", Vec::new()).expect(200);
    }
    browser.text_when(
        &format!("{} [data-field=\"p99\"]", object_row("counter")),
        "to show a p99",
        |t| t.ends_with("ms") || t.ends_with("µs"),
    );
    browser.screenshot("overview");

    browser.click(&format!("{} a", object_row("counter")));
    browser.wait_text("#object-id", "counter");
    browser.wait_text("#object-version", "1");
    browser.wait_text("#log-status", "live");
    // A call with curl's means appears in the live log within a couple of seconds.
    let request_id = "ui-live-log-call";
    let sent = Instant::now();
    st.request_with_headers(
        "POST",
        "/objects/counter",
        &[("x-request-id", request_id)],
        Vec::new(),
    )
    .expect(200);
    let line = format!("#log .log-line[data-request-id=\"{request_id}\"][data-event=\"call.end\"]");
    browser.wait_shown(&line);
    let took = sent.elapsed();
    println!("the call appeared in the page's log after {took:?}");
    assert!(took < Duration::from_secs(3), "the log line took {took:?}");
    browser.text_when("#object-calls", "to count the calls", |t| {
        t.parse::<u64>().is_ok_and(|n| n >= 6)
    });
    // The state: the counter's one key, with its history.
    browser.wait_text("#state tr[data-key=\"count\"] [data-field=\"value\"]", "6");
    browser.click("#state button[data-history-key=\"count\"]");
    browser.wait_shown("#history-rows tr");

    // The call form: the object's answer, status and body.
    browser.select("#call-method", "POST");
    browser.click("#call-send");
    browser.text_when("#call-status", "to show 200", |t| t.starts_with("200"));
    browser.text_when("#call-response", "to show the count", |t| {
        t.contains("\"count\": 7")
    });
    browser.screenshot("object");
}

#[test]
fn on_a_phone_the_tables_become_cards() {
    let Some(browser) = Browser::open_on(Screen::Phone) else {
        return;
    };
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("hello", "hello");
    st.call("POST", "counter", "", Vec::new()).expect(200);

    browser.goto(&format!("{}/ui", st.url));
    browser.wait_text(
        &format!("{} [data-field=\"version\"]", object_row("hello")),
        "1",
    );
    assert_eq!(browser.eval("window.innerWidth"), 390);
    // No header row: each cell carries its label.
    assert_eq!(
        browser.eval("getComputedStyle(document.querySelector('#objects thead')).display"),
        "none"
    );
    let label = "getComputedStyle(document.querySelector('#objects td[data-field=home]'), \
                 '::before').content";
    assert_eq!(browser.eval(label), "\"Home\"");
    browser.screenshot("overview-phone");
    let sideways = "document.documentElement.scrollWidth - window.innerWidth";
    assert_eq!(browser.eval(sideways), 0, "the overview scrolls sideways");

    browser.click(&format!("{} a", object_row("counter")));
    browser.wait_text("#object-version", "1");
    browser.wait_text("#log-status", "live");
    browser.wait_shown("#log .log-line[data-event=\"call.end\"]");
    browser.screenshot("object-phone");
    assert_eq!(
        browser.eval(sideways),
        0,
        "the object's page scrolls sideways"
    );
}

#[test]
fn rollback_from_the_page_changes_the_version_served() {
    let Some(browser) = Browser::open() else {
        return;
    };
    let st = Station::new();
    st.deploy_fixture("obj", "hello");
    st.deploy_fixture("obj", "counter");
    let counting = st.call("GET", "obj", "", Vec::new()).expect_json(200);
    assert!(counting.get("count").is_some(), "{counting}");

    browser.goto(&format!("{}/ui#/objects/obj", st.url));
    browser.wait_text("#object-version", "2");
    browser.wait_shown("#versions tr[data-version=\"2\"].current");
    browser.click("#versions button[data-rollback=\"1\"]");
    browser.wait_shown("#confirm-dialog[open]");
    browser.screenshot("rollback-confirm");
    browser.click("#confirm-ok");
    // A rollback deploys version 1's bytes as version 3.
    browser.wait_text("#object-version", "3");
    browser.wait_shown("#versions tr[data-version=\"3\"].current");
    browser.screenshot("rollback");

    let versions = st.get_json("/admin/objects/obj/versions");
    assert_eq!(versions["current"], 3, "{versions}");
    assert_eq!(
        versions["versions"][2]["sha256"], versions["versions"][0]["sha256"],
        "{versions}"
    );
    let hello = st.call("GET", "obj", "", Vec::new()).expect_json(200);
    assert!(
        hello.get("message").is_some(),
        "hello serves again: {hello}"
    );
}

#[test]
fn migrate_from_the_page_moves_the_home() {
    let Some(browser) = Browser::open() else {
        return;
    };
    let mut cluster = Cluster::reserve(2);
    let (st, id_a, id_b) = two_stations_with_counter(&mut cluster);
    let (a, b) = (&st[0], &st[1]);
    a.call("POST", "counter", "", Vec::new()).expect(200);

    // The page of the station that does not home the object.
    browser.goto(&format!("{}/ui", b.url));
    for id in [&id_a, &id_b] {
        let row = format!("#stations tr[data-station-id=\"{id}\"]");
        browser.wait_text(&format!("{row} [data-field=\"state\"]"), "alive");
    }
    // Figures come from every station: the calls counted on a show on b's page.
    browser.text_when(
        &format!("{} [data-field=\"p99\"]", object_row("counter")),
        "to show a p99 from the home",
        |t| t.ends_with("ms") || t.ends_with("µs"),
    );
    browser.screenshot("cluster");
    browser.click(&format!("{} a", object_row("counter")));
    browser.wait_text("#object-home", &id_a);
    browser.select("#migrate-target", &id_b);
    browser.click("#migrate-button");
    browser.click("#confirm-ok");
    browser.wait_text("#object-home", &id_b);
    browser.screenshot("migrated");

    for station in [a, b] {
        let entry = station.wait_home("counter", &id_b);
        assert!(entry["epoch"].as_u64().is_some_and(|e| e >= 2), "{entry}");
    }
    let count = b.call("GET", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(count["count"], 1, "the state moved with it: {count}");
}

#[test]
fn with_an_admin_token_the_page_asks_for_it() {
    let Some(browser) = Browser::open() else {
        return;
    };
    const TOKEN: &str = "ui-test-admin-token";
    let st = Station::start(Opts::new().flag("--admin-token", TOKEN));
    let auth = format!("Bearer {TOKEN}");
    let authorization = [("authorization", auth.as_str())];
    for id in ["counter", "hello"] {
        st.request_with_headers(
            "PUT",
            &format!("/admin/objects/{id}"),
            &authorization,
            fixture_bytes(id),
        )
        .expect(201);
    }
    st.get("/admin/stats").expect_error(401, "unauthorized");
    st.call("POST", "counter", "", Vec::new()).expect(200);

    browser.goto(&format!("{}/ui#/objects/counter", st.url));
    browser.wait_shown("#token-dialog[open] #token-input");
    browser.screenshot("token");
    // A wrong token is refused and asked for again.
    browser.fill("#token-input", "not-the-token");
    browser.click("#token-submit");
    browser.wait_shown("#token-dialog[open] #token-error");
    browser.fill("#token-input", TOKEN);
    browser.click("#token-submit");
    browser.wait_gone("#token-dialog[open]");
    browser.wait_shown("#versions tr[data-version=\"1\"].current");
    browser.wait_text("#log-status", "live");
    browser.text_when("#object-state-size", "to show the state's size", |t| {
        t.contains("key")
    });

    // Undeploy, with the token, after confirming.
    browser.goto(&format!("{}/ui#/objects/hello", st.url));
    browser.wait_shown("#versions tr[data-version=\"1\"].current");
    browser.click("#undeploy-button");
    browser.click("#confirm-ok");
    browser.wait_shown(&object_row("counter"));
    browser.wait_gone(&object_row("hello"));
    poll("hello to be undeployed", SHOW, || {
        (!st.object_ids().contains(&"hello".to_string())).then_some(())
    });
}
