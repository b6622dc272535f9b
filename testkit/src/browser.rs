//! A real browser for tests: Debian's Chromium, headless, driven through the Chrome
//! DevTools Protocol (CDP) over its websocket, so a test clicks and types as a person does.
//!
//! Why not a crate such as chromiumoxide: it generates bindings for the whole protocol
//! (minutes of compile time on 2 cores) while tests need a dozen commands. This client
//! speaks the few it needs over the websocket client already in the tree
//! (async-tungstenite, which rumqttd builds on).
//!
//! Shape:
//! - [`Browser::launch`] starts one Chromium (`--remote-debugging-port=0`, a fresh profile
//!   in a temporary directory) and reads the websocket address it prints. One task reads
//!   every message: answers go to the call waiting for them (by id), events are kept per
//!   page (JavaScript exceptions and console errors, for [`Page::errors`]).
//! - [`Browser::page`] opens a page in a browser context of its own: its own cookies and
//!   storage, as another person on another computer would have.
//! - [`Page::click`] scrolls the element into view, checks that nothing covers its centre
//!   and sends real mouse events there; [`Page::type_into`] clicks the field, selects what
//!   is in it and inserts text as a keyboard or an input method would (`Input.insertText`,
//!   so Chinese text works); [`Page::press`] sends a key. Nothing sets a value or calls a
//!   handler behind the page's back, except [`Page::select`] (a native `<select>` popup is
//!   not drawn headless) and [`Page::eval`], which tests use to look, not to act.
//!
//! Every wait has a deadline, and every failure says what was awaited, the last value
//! seen and the page's JavaScript errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

/// Where `.ci/setup` installs Chromium (Debian's package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a single protocol call may take before the test is told the browser hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of Chromium's own log kept for error messages.
const LOG_LINES: usize = 40;

/// Why a browser step failed. Tests usually `expect` these; the text says what was tried.
#[derive(Debug)]
pub struct BrowserError(pub String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

fn fail<T>(msg: impl Into<String>) -> Result<T, BrowserError> {
    Err(BrowserError(msg.into()))
}

/// Screen of a page: a desktop window or a phone (390x844, touch, mobile viewport).
#[derive(Debug, Clone, Copy)]
pub struct PageOptions {
    /// CSS pixels.
    pub width: u32,
    /// CSS pixels.
    pub height: u32,
    /// A phone: mobile viewport rules and touch.
    pub mobile: bool,
}

impl PageOptions {
    /// A laptop screen, what an operator at the bureau has.
    pub const DESKTOP: PageOptions = PageOptions { width: 1280, height: 800, mobile: false };
    /// A common phone (iPhone 12-15 class), what a township official carries.
    pub const PHONE: PageOptions = PageOptions { width: 390, height: 844, mobile: true };
}

impl Default for PageOptions {
    fn default() -> PageOptions {
        PageOptions::DESKTOP
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>;

/// The connection to Chromium, shared by the browser and its pages.
struct Conn {
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: AtomicU64,
    /// JavaScript exceptions and console errors by page session.
    errors: Mutex<HashMap<String, Vec<String>>>,
    /// Chromium's stderr, last lines.
    log: Mutex<Vec<String>>,
}

impl Conn {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, BrowserError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if self.out.send(msg.to_string()).is_err() {
            return fail(format!("{method}: the browser connection is closed; {}", self.log_tail()));
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => fail(format!("{method} refused by Chromium: {e}")),
            Ok(Err(_)) => fail(format!("{method}: the browser went away; {}", self.log_tail())),
            Err(_) => {
                lock(&self.pending).remove(&id);
                fail(format!("{method}: no answer within {CALL_TIMEOUT:?}"))
            }
        }
    }

    fn log_tail(&self) -> String {
        format!("Chromium's log ends:\n{}", lock(&self.log).join("\n"))
    }

    /// Routes one message from Chromium: an answer to its caller, an error event to its page.
    fn dispatch(&self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(text) else { return };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            if let Some(tx) = lock(&self.pending).remove(&id) {
                let answer = match msg.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = tx.send(answer);
            }
            return;
        }
        let Some(session) = msg.get("sessionId").and_then(Value::as_str) else { return };
        let params = &msg["params"];
        let error = match msg.get("method").and_then(Value::as_str) {
            Some("Runtime.exceptionThrown") => {
                let d = &params["exceptionDetails"];
                let what = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
                Some(format!("exception: {what} ({}:{})", d["url"].as_str().unwrap_or("?"), d["lineNumber"]))
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v["value"].as_str().map_or_else(|| v["description"].to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(format!("console.error: {}", args.join(" ")))
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let e = &params["entry"];
                Some(format!("log: {} ({})", e["text"].as_str().unwrap_or(""), e["url"].as_str().unwrap_or("")))
            }
            _ => None,
        };
        if let Some(error) = error {
            lock(&self.errors).entry(session.to_string()).or_default().push(error);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One headless Chromium. Killed when dropped.
pub struct Browser {
    conn: Arc<Conn>,
    _child: Child,
    _profile: TempProfile,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A scratch profile directory, removed with the browser.
struct TempProfile(PathBuf);

impl Drop for TempProfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts Debian's Chromium headless. Fails with what to install when it is missing.
    pub async fn launch() -> Result<Browser, BrowserError> {
        if !Path::new(CHROMIUM).exists() {
            return fail(format!("{CHROMIUM} is missing: run .ci/setup (it installs Debian's chromium)"));
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let profile = TempProfile(std::env::temp_dir().join(format!(
            "vt-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )));
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--mute-audio",
                "--lang=en-US",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BrowserError(format!("cannot start {CHROMIUM}: {e}")))?;
        let Some(stderr) = child.stderr.take() else { return fail("Chromium's stderr is not piped") };
        let log = Mutex::new(Vec::new());
        let mut lines = BufReader::new(stderr).lines();
        let started = Instant::now();
        let ws_url = loop {
            let line =
                match tokio::time::timeout(START_TIMEOUT.saturating_sub(started.elapsed()), lines.next_line()).await {
                    Ok(Ok(Some(line))) => line,
                    Ok(_) => return fail(format!("Chromium exited before it listened: {}", lock(&log).join("\n"))),
                    Err(_) => return fail(format!("Chromium printed no DevTools address within {START_TIMEOUT:?}")),
                };
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_string();
            }
            lock(&log).push(line);
        };
        let (ws, _) = async_tungstenite::tokio::connect_async(ws_url.as_str())
            .await
            .map_err(|e| BrowserError(format!("cannot connect to Chromium at {ws_url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let conn = Arc::new(Conn {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            errors: Mutex::new(HashMap::new()),
            log,
        });
        let writer = tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
        });
        let reader_conn = conn.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(text) = msg {
                    reader_conn.dispatch(&text);
                }
            }
            // Chromium went away: wake every waiting call.
            lock(&reader_conn.pending).clear();
        });
        // Keep draining Chromium's log so it never blocks on a full pipe.
        let log_conn = conn.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = lock(&log_conn.log);
                if log.len() >= LOG_LINES {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        Ok(Browser { conn, _child: child, _profile: profile, tasks: vec![writer, reader, drain] })
    }

    /// Opens a page in a browser context of its own (own cookies: another person).
    pub async fn page(&self, opts: PageOptions) -> Result<Page, BrowserError> {
        let ctx = self.conn.call(None, "Target.createBrowserContext", json!({ "disposeOnDetach": true })).await?;
        let context = ctx["browserContextId"].as_str().unwrap_or_default().to_string();
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({ "url": "about:blank", "browserContextId": context }))
            .await?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached =
            self.conn.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await?;
        let Some(session) = attached["sessionId"].as_str().map(str::to_string) else {
            return fail(format!("Target.attachToTarget gave no session: {attached}"));
        };
        let page = Page { conn: self.conn.clone(), session, opts };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": opts.width, "height": opts.height, "deviceScaleFactor": 1, "mobile": opts.mobile }),
        )
        .await?;
        if opts.mobile {
            page.call("Emulation.setTouchEmulationEnabled", json!({ "enabled": true, "maxTouchPoints": 5 })).await?;
        }
        Ok(page)
    }
}

/// One tab, in its own browser context.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    opts: PageOptions,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.conn.call(Some(&self.session), method, params).await
    }

    /// The screen this page was opened with.
    pub fn options(&self) -> PageOptions {
        self.opts
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        let nav = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            return fail(format!("loading {url} failed: {err}"));
        }
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(30)).await.map(drop)
    }

    /// Evaluates a JavaScript expression (promises awaited) and returns its value as JSON.
    /// For looking at the page; act on it with clicks and typing.
    pub async fn eval(&self, expression: &str) -> Result<Value, BrowserError> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true, "userGesture": true }),
            )
            .await?;
        if let Some(d) = r.get("exceptionDetails") {
            let what = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
            return fail(format!("`{expression}` threw: {what}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls `expression` until it is truthy and returns its value; on timeout, says what
    /// was awaited, its last value and the page's errors.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> Result<Value, BrowserError> {
        let started = Instant::now();
        let mut last: Value;
        loop {
            match self.eval(expression).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => last = v,
                Err(e) => last = Value::String(e.0),
            }
            if started.elapsed() > timeout {
                return fail(format!(
                    "waited {timeout:?} for `{expression}`; last value {last}; page errors: {:?}",
                    self.errors()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `selector` matches a visible element, then returns the centre of its
    /// box (in the viewport) after scrolling it into view.
    async fn centre(&self, selector: &str) -> Result<(f64, f64), BrowserError> {
        let sel = json!(selector).to_string();
        let probe = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); const r = e.getBoundingClientRect(); \
             if (r.width === 0 || r.height === 0) return null; \
             const x = r.left + r.width / 2, y = r.top + r.height / 2; const top = document.elementFromPoint(x, y); \
             return {{x, y, hit: !!top && (top === e || e.contains(top)), top: top ? top.outerHTML.slice(0, 120) : null}}; }})()"
        );
        let found = self
            .wait_for(&probe, Duration::from_secs(10))
            .await
            .map_err(|e| BrowserError(format!("no visible element matches `{selector}`: {e}")))?;
        if found["hit"] != Value::Bool(true) {
            return fail(format!("`{selector}` is covered at its centre by {}", found["top"]));
        }
        Ok((found["x"].as_f64().unwrap_or(0.0), found["y"].as_f64().unwrap_or(0.0)))
    }

    /// Clicks the centre of the first element matching `selector` with real mouse events
    /// (or a tap on a phone page).
    pub async fn click(&self, selector: &str) -> Result<(), BrowserError> {
        let (x, y) = self.centre(selector).await?;
        if self.opts.mobile {
            let point = json!([{ "x": x, "y": y }]);
            self.call("Input.dispatchTouchEvent", json!({ "type": "touchStart", "touchPoints": point })).await?;
            self.call("Input.dispatchTouchEvent", json!({ "type": "touchEnd", "touchPoints": [] })).await?;
            return Ok(());
        }
        self.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": x, "y": y })).await?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1 }),
            )
            .await?;
        }
        Ok(())
    }

    /// Clicks the field, selects what it holds and types `text` over it (inserted as a
    /// keyboard or input method does, so `input` events fire and Chinese works).
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<(), BrowserError> {
        self.click(selector).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "rawKeyDown", "key": "a", "code": "KeyA", "modifiers": 2,
                    "windowsVirtualKeyCode": 65, "commands": ["selectAll"] }),
        )
        .await?;
        self.call("Input.dispatchKeyEvent", json!({ "type": "keyUp", "key": "a", "code": "KeyA", "modifiers": 2 }))
            .await?;
        if text.is_empty() {
            return self.press("Backspace").await;
        }
        self.call("Input.insertText", json!({ "text": text })).await.map(drop)
    }

    /// Presses and releases one key: `Enter`, `Tab`, `Escape`, `Backspace`, `ArrowDown`,
    /// `ArrowUp`, `Space` or a single character.
    pub async fn press(&self, key: &str) -> Result<(), BrowserError> {
        let (key, code, vk, text) = match key {
            "Enter" => ("Enter", "Enter", 13, Some("\r")),
            "Tab" => ("Tab", "Tab", 9, None),
            "Escape" => ("Escape", "Escape", 27, None),
            "Backspace" => ("Backspace", "Backspace", 8, None),
            "ArrowDown" => ("ArrowDown", "ArrowDown", 40, None),
            "ArrowUp" => ("ArrowUp", "ArrowUp", 38, None),
            "Space" => (" ", "Space", 32, Some(" ")),
            k if k.chars().count() == 1 => (k, "", 0, Some(k)),
            other => return fail(format!("press: no key named {other:?}")),
        };
        let mut down = json!({ "type": if text.is_some() { "keyDown" } else { "rawKeyDown" },
                               "key": key, "code": code, "windowsVirtualKeyCode": vk });
        if let Some(t) = text {
            down["text"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk }),
        )
        .await
        .map(drop)
    }

    /// Chooses `value` in a `<select>`: focuses it with a click, then sets the value and
    /// fires `input` and `change` as the browser does (a native select popup is not drawn
    /// headless, so it cannot be clicked). Fails if no option has that value.
    pub async fn select(&self, selector: &str, value: &str) -> Result<(), BrowserError> {
        self.click(selector).await?;
        let (sel, val) = (json!(selector), json!(value));
        let done = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
                 if (![...e.options].some(o => o.value === {val})) return 'no option'; \
                 e.value = {val}; e.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 e.dispatchEvent(new Event('change', {{bubbles: true}})); return 'ok'; }})()"
            ))
            .await?;
        if done != json!("ok") {
            return fail(format!("select `{selector}` = {value:?}: {done}"));
        }
        Ok(())
    }

    /// The visible text of the first element matching `selector` (waits for it).
    pub async fn text(&self, selector: &str) -> Result<String, BrowserError> {
        let sel = json!(selector);
        let v = self
            .wait_for(
                &format!("(() => {{ const e = document.querySelector({sel}); return e ? [e.innerText] : null; }})()"),
                Duration::from_secs(10),
            )
            .await?;
        Ok(v[0].as_str().unwrap_or_default().to_string())
    }

    /// Saves a PNG of the viewport (the whole page when `full` is set) to `path`.
    pub async fn screenshot(&self, path: impl AsRef<Path>, full: bool) -> Result<(), BrowserError> {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": full, "fromSurface": true }),
            )
            .await?;
        let data = shot["data"].as_str().unwrap_or_default();
        write_base64(path.as_ref(), data)
    }

    /// Prints the page to PDF (A4, backgrounds) as the browser's print dialog would.
    pub async fn pdf(&self, path: impl AsRef<Path>) -> Result<(), BrowserError> {
        let pdf = self
            .call(
                "Page.printToPDF",
                json!({ "printBackground": true, "paperWidth": 8.27, "paperHeight": 11.69, "preferCSSPageSize": true }),
            )
            .await?;
        write_base64(path.as_ref(), pdf["data"].as_str().unwrap_or_default())
    }

    /// JavaScript exceptions, `console.error` calls and browser error log entries seen on
    /// this page so far (failed resource loads included).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.conn.errors).get(&self.session).cloned().unwrap_or_default()
    }

    /// Closes the page (and its browser context).
    pub async fn close(self) -> Result<(), BrowserError> {
        let target = self.call("Target.getTargetInfo", json!({})).await?;
        let id = target["targetInfo"]["targetId"].clone();
        self.conn.call(None, "Target.closeTarget", json!({ "targetId": id })).await.map(drop)
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn write_base64(path: &Path, data: &str) -> Result<(), BrowserError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| BrowserError(format!("Chromium sent bad base64: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BrowserError(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, bytes).map_err(|e| BrowserError(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client against the real browser: a click lands on the button (its handler
    /// counts), typing replaces a field's text (Chinese too), Enter submits, a covered
    /// button is refused rather than clicked through, and a thrown exception is reported.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clicks_types_and_reports_errors_in_a_real_chromium() {
        let browser = Browser::launch().await.expect("Chromium starts (run .ci/setup)");
        let page = browser.page(PageOptions::DESKTOP).await.expect("a page");
        // A phone lays a page out 980 px wide unless it asks for the device's width.
        let html = "<meta name=viewport content='width=device-width'><form onsubmit='event.preventDefault(); window.sent = document.querySelector(\"#f\").value'>\
            <input id=f value=old><button id=b type=button onclick='window.n = (window.n||0) + 1'>go</button></form>\
            <div style='position:relative'><button id=hidden>under</button>\
            <div style='position:absolute;inset:0;background:red'>cover</div></div>";
        let url = format!("data:text/html;charset=utf-8,{}", urlencode(html));
        page.goto(&url).await.expect("the page loads");
        page.click("#b").await.expect("click");
        page.click("#b").await.expect("second click");
        assert_eq!(page.eval("window.n").await.unwrap(), json!(2), "two real clicks, two handler runs");
        page.type_into("#f", "洪水预警").await.expect("typing");
        page.press("Enter").await.expect("Enter");
        assert_eq!(page.wait_for("window.sent", Duration::from_secs(5)).await.unwrap(), json!("洪水预警"));
        let covered = page.click("#hidden").await.expect_err("a covered button is not clicked");
        assert!(covered.0.contains("covered"), "{covered}");
        assert!(page.errors().is_empty(), "no errors yet: {:?}", page.errors());
        page.eval("setTimeout(() => { throw new Error('boom') }, 0)").await.unwrap();
        page.wait_for("new Promise(r => setTimeout(() => r(true), 200))", Duration::from_secs(5)).await.unwrap();
        let errors = page.errors();
        assert!(errors.iter().any(|e| e.contains("boom")), "the exception is reported: {errors:?}");

        // A second person: own cookies.
        let other = browser.page(PageOptions::PHONE).await.expect("a phone page");
        other.goto(&url).await.unwrap();
        assert_eq!(other.eval("window.innerWidth").await.unwrap(), json!(390));
        other.click("#b").await.expect("a tap");
        assert_eq!(other.eval("window.n").await.unwrap(), json!(1), "a tap is a click");
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
