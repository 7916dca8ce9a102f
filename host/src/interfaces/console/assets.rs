//! The stylesheet and the one script, embedded in the binary.
//!
//! The script does one thing: co-signing a plugin package in the browser. The secret key is
//! read from a field that has no `name` (so the form never sends it), the content hash is
//! signed with the browser's own Ed25519 (WebCrypto), and only the signature is posted. Every
//! other page works without script.

use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::interfaces::console::Console;

/// The stylesheet: readable contrast (text #1b1f24 on white, links #0b57d0), works from 390 px
/// (tables scroll inside their box) to wide screens, visible keyboard focus.
pub const CSS: &str = r#"
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; --link:#0b57d0;
  --good:#116329; --good-bg:#dafbe1; --bad:#a40e26; --bad-bg:#ffebe9; --wait:#7d4e00; --wait-bg:#fff8c5; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--link); }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus { outline:3px solid #f0b400; outline-offset:2px; }
.skip { position:absolute; left:-999px; } .skip:focus { left:8px; top:8px; background:#fff; padding:4px 8px; z-index:2; }
header.top { display:flex; flex-wrap:wrap; gap:8px 20px; align-items:center; padding:10px 20px; background:#fff; border-bottom:1px solid var(--line); }
header.top .brand { font-weight:700; text-decoration:none; color:var(--fg); font-size:18px; }
header.top nav { display:flex; flex-wrap:wrap; gap:4px 16px; flex:1; }
header.top nav a { text-decoration:none; padding:4px 0; }
header.top .who { display:flex; gap:12px; align-items:center; color:var(--muted); font-size:14px; }
header.top .who form { margin:0; }
main { max-width:1180px; margin:0 auto; padding:20px; }
h1 { font-size:24px; margin:0 0 12px; } h2 { font-size:19px; margin:0 0 10px; } h3 { font-size:16px; margin:12px 0 6px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 18px; margin:0 0 16px; }
.narrow { max-width:520px; margin:24px auto; }
.grid { display:grid; gap:16px; grid-template-columns:repeat(auto-fit, minmax(260px, 1fr)); }
.kpis { display:grid; gap:12px; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); margin:0 0 16px; }
.kpi { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.kpi b { display:block; font-size:22px; } .kpi span { color:var(--muted); font-size:14px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--bg); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.changed td { background:var(--wait-bg); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:13px; font-weight:600; }
.badge.good { color:var(--good); background:var(--good-bg); } .badge.bad { color:var(--bad); background:var(--bad-bg); }
.badge.wait { color:var(--wait); background:var(--wait-bg); }
.error { color:var(--bad); background:var(--bad-bg); padding:8px 12px; border-radius:6px; }
.notice { color:var(--good); background:var(--good-bg); padding:8px 12px; border-radius:6px; }
.hint { color:var(--muted); font-size:14px; }
code, pre { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; }
pre { background:var(--bg); border:1px solid var(--line); border-radius:6px; padding:10px; overflow:auto; max-height:360px; white-space:pre-wrap; word-break:break-all; }
label { display:block; font-weight:600; margin:8px 0 4px; }
input[type=text], input[type=password], input[type=number], input[type=search], textarea, select { width:100%; padding:8px; border:1px solid #8c959f; border-radius:6px; font:inherit; }
textarea { min-height:64px; }
button, .button { display:inline-block; margin-top:10px; padding:8px 16px; border:1px solid #1f6feb; background:#0b57d0; color:#fff; border-radius:6px; font:inherit; font-weight:600; cursor:pointer; text-decoration:none; }
button.danger { background:var(--bad); border-color:var(--bad); }
button.secondary, .button.secondary { background:#fff; color:var(--link); }
button.link { background:none; border:none; color:var(--link); padding:0; margin:0; font-weight:400; text-decoration:underline; }
.check { display:flex; gap:8px; align-items:center; font-weight:400; }
.actions { display:grid; gap:12px; grid-template-columns:repeat(auto-fit, minmax(240px, 1fr)); }
.actions form { border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.bar { background:var(--bg); border:1px solid var(--line); border-radius:4px; height:10px; }
.bar span { display:block; height:100%; background:#0b57d0; border-radius:4px; }
.perks { display:grid; gap:12px; grid-template-columns:repeat(auto-fit, minmax(240px, 1fr)); }
.perk { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.perk .cost { font-weight:700; }
.balance { font-size:40px; font-weight:700; line-height:1.1; }
.pass img { width:100%; max-width:260px; height:auto; background:#fff; }
.matrix td { text-align:right; } .matrix td.pos { background:#ffebe9; } .matrix td.neg { background:#dafbe1; }
figure.chart { margin:0; } figure.chart svg { display:block; width:100%; height:auto; }
.charts { display:grid; gap:16px; grid-template-columns:repeat(auto-fit, minmax(min(100%, 460px), 1fr)); }
svg { max-width:100%; height:auto; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; word-break:break-all; }
@media (max-width: 600px) { main { padding:12px; } h1 { font-size:21px; } header.top { padding:8px 12px; } }
"#;

/// Co-signing in the browser (WebCrypto Ed25519, in Chromium since 137, Firefox since 129,
/// Safari since 17). The 32-byte secret is wrapped in the fixed PKCS#8 prefix for Ed25519.
pub const JS: &str = r#"
(function () {
  function hex(bytes) { return Array.from(new Uint8Array(bytes)).map(function (b) { return b.toString(16).padStart(2, "0"); }).join(""); }
  function unhex(text) {
    var clean = (text || "").trim().toLowerCase();
    if (!/^[0-9a-f]*$/.test(clean) || clean.length % 2) { throw new Error("not hex"); }
    var out = new Uint8Array(clean.length / 2);
    for (var i = 0; i < out.length; i++) { out[i] = parseInt(clean.substr(i * 2, 2), 16); }
    return out;
  }
  var PKCS8_ED25519 = unhex("302e020100300506032b657004220420");
  document.addEventListener("submit", async function (event) {
    var form = event.target;
    if (!form.matches("form[data-cosign]")) { return; }
    var signature = form.querySelector("[name=signature]");
    var secret = form.querySelector("[data-secret]");
    var status = form.querySelector("[data-status]");
    if (signature.value.trim() || !secret.value.trim()) { return; }
    event.preventDefault();
    try {
      var seed = unhex(secret.value);
      if (seed.length !== 32) { throw new Error("the secret key is 64 hex characters"); }
      var pkcs8 = new Uint8Array(PKCS8_ED25519.length + 32);
      pkcs8.set(PKCS8_ED25519); pkcs8.set(seed, PKCS8_ED25519.length);
      var key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
      var sig = await crypto.subtle.sign({ name: "Ed25519" }, key, unhex(form.dataset.cosign));
      signature.value = hex(sig);
      secret.value = "";
      form.submit();
    } catch (err) {
      status.textContent = "Could not sign here: " + err.message + ". Sign with the CLI command below and paste the signature.";
    }
  });
})();
"#;

/// `/console/assets/{file}`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/assets/{file}", get(serve))
}

async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
