//! `specreplay report` in a real headless browser (Debian's Chromium, installed by
//! `scripts/test.sh`): each page loads with no console message and no network request,
//! screenshots of the golden 13-step trace and of a 16-request vLLM corpus trace are not
//! blank (pixel variance), and the DOM holds exactly one timeline cell per scheduled
//! (step, row). A control page with a console error and an image fetch proves the
//! harness sees both. Refresh the committed screenshots with
//! `SPECREPLAY_UPDATE_SCREENSHOTS=1 cargo test --test report_browser`.
//!
//! Console messages come from Chromium's own log (`--enable-logging=stderr --v=0`,
//! `CONSOLE` lines); network requests from its NetLog (`--log-net-log`): every
//! `URL_REQUEST_START_JOB` whose network isolation key is the page's (`file://`) and whose
//! URL is not `file:`/`data:`. `--host-resolver-rules` resolves no host, so nothing
//! leaves the machine whatever a page or the browser tries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use specreplay_sim::trace;

mod common;
use common::{cli, root};

fn chromium() -> PathBuf {
    let p = std::env::var_os("SPECREPLAY_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        p.exists(),
        "Chromium not found at {} (set SPECREPLAY_CHROMIUM): `bash scripts/test.sh` installs Debian's chromium \
         (apt-get install -y chromium); the report browser test does not skip",
        p.display()
    );
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_browser").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Load {
    dom: String,
    console: Vec<String>,
    requests: Vec<String>,
}

/// Loads `page` headless; returns its DOM, console lines and the page's network requests.
/// With `png`, also takes a screenshot of `size` ("W,H").
fn load(page: &Path, png: Option<(&Path, &str)>) -> Load {
    let dir = page.parent().unwrap();
    let net = dir.join("net.json");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    cmd.arg(format!("--user-data-dir={}", dir.join("profile").display()));
    cmd.arg(format!("--log-net-log={}", net.display()));
    match png {
        Some((p, size)) => {
            cmd.arg(format!("--window-size={size}"));
            cmd.arg(format!("--screenshot={}", p.display()));
        }
        None => {
            cmd.arg("--dump-dom");
        }
    }
    cmd.arg(format!("file://{}", page.display()));
    let out = cmd.output().expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let console = err.lines().filter(|l| l.contains("CONSOLE")).map(str::to_string).collect();
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&net).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().unwrap();
    let requests = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.contains("file://")))
        .filter_map(|e| e["params"]["url"].as_str())
        .filter(|u| !u.starts_with("file:") && !u.starts_with("data:"))
        .map(str::to_string)
        .collect();
    Load { dom: String::from_utf8_lossy(&out.stdout).into(), console, requests }
}

/// Pixel variance of a PNG screenshot (8-bit RGB/RGBA, decoded by python3's zlib).
fn variance(png: &Path) -> f64 {
    let script = r#"
import sys, zlib, struct
b = open(sys.argv[1], 'rb').read()
assert b[:8] == b'\x89PNG\r\n\x1a\n'
i, idat, w = 8, b'', 0
while i < len(b):
    n, t = struct.unpack('>I4s', b[i:i+8]); d = b[i+8:i+8+n]; i += 12 + n
    if t == b'IHDR': w, h, depth, ctype = struct.unpack('>IIBB', d[:10])
    if t == b'IDAT': idat += d
assert depth == 8 and ctype in (2, 6)
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(idat); stride = w * bpp
prev = bytearray(stride); s = s2 = n = 0; pos = 0
for y in range(h):
    f = raw[pos]; line = bytearray(raw[pos+1:pos+1+stride]); pos += 1 + stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0; up = prev[x]; c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + up) & 255
        elif f == 3: line[x] = (line[x] + (a + up) // 2) & 255
        elif f == 4:
            p = a + up - c; pa, pb, pc = abs(p-a), abs(p-up), abs(p-c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
    prev = line
    for x in range(0, stride, bpp * 4):
        v = (line[x] + line[x+1] + line[x+2]) / 3; s += v; s2 += v * v; n += 1
print(s2 / n - (s / n) ** 2)
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(png).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The (data-step, data-row) pairs of the plain timeline cells in a DOM.
fn cells(dom: &str) -> Vec<(u64, u64)> {
    let attr = |tag: &str, name: &str| -> Option<u64> {
        let i = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[i..].split('"').next()?.parse().ok()
    };
    dom.split("<rect ")
        .skip(1)
        .map(|t| &t[..t.find('>').unwrap_or(t.len())])
        .filter(|t| t.starts_with("class=\"cell") && !t.contains("cell agg"))
        .map(|t| (attr(t, "data-step").unwrap(), attr(t, "data-row").unwrap()))
        .collect()
}

fn report(rels: &[&str], dir: &Path) -> PathBuf {
    // Run from the repository root with relative paths, as a user would (the page titles
    // name the traces as given).
    let page = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .current_dir(root())
        .arg("report")
        .args(rels)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    page
}

fn check_page(rel: &str, shot: &str, size: &str) {
    let dir = tmp(shot);
    let page = report(&[rel], &dir);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http:") && !html.contains("https:") && !html.contains("<script"),
        "{rel}: external reference"
    );
    let l = load(&page, None);
    assert!(l.console.is_empty(), "{rel}: console messages: {:?}", l.console);
    assert!(l.requests.is_empty(), "{rel}: network requests: {:?}", l.requests);
    let t = trace::read(&root().join(rel)).unwrap();
    let want: BTreeSet<(u64, u64)> =
        t.steps.iter().flat_map(|s| (0..s.batch_req_ids.len() as u64).map(move |r| (s.step, r))).collect();
    let got = cells(&l.dom);
    assert_eq!(got.len(), want.len(), "{rel}: one cell per scheduled (step, row)");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want, "{rel}");
    let png = dir.join(format!("{shot}.png"));
    let l = load(&page, Some((&png, size)));
    assert!(l.console.is_empty() && l.requests.is_empty(), "{:?} {:?}", l.console, l.requests);
    let v = variance(&png);
    assert!(v > 100.0, "{rel}: screenshot looks blank (variance {v})");
    if std::env::var_os("SPECREPLAY_UPDATE_SCREENSHOTS").is_some() {
        std::fs::copy(&png, root().join("docs").join(format!("{shot}.png"))).unwrap();
    }
}

#[test]
fn golden_report_loads_clean_and_draws_every_cell() {
    check_page("traces/vllm_ngram_13step.json", "report_golden", "1100,700");
}

#[test]
fn sixteen_request_corpus_report_loads_clean_and_draws_every_cell() {
    let t = trace::read(&root().join("traces/conformance/vllm-0.12.0/s3_0202.bin")).unwrap();
    assert_eq!(t.requests.len(), 16);
    check_page("traces/conformance/vllm-0.12.0/s3_0202.bin", "report_16req", "1200,1000");
}

#[test]
fn harness_sees_console_errors_and_network_requests() {
    let dir = tmp("control");
    let page = dir.join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('boom')</script><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let l = load(&page, None);
    assert!(l.console.iter().any(|c| c.contains("boom")), "{:?}", l.console);
    assert!(l.requests.iter().any(|u| u.contains("127.0.0.1:9")), "{:?}", l.requests);
    // A blank page has no variance.
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let png = dir.join("blank.png");
    load(&blank, Some((&png, "400,300")));
    assert!(variance(&png) < 1.0);
}

#[test]
fn two_trace_report_highlights_the_first_divergence() {
    let dir = tmp("diff");
    // A copy of the golden trace with one position changed at step 7.
    let mut t = trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap();
    t.steps[6].positions[0] = 99;
    let b = dir.join("mutated.json");
    trace::write(&b, &t).unwrap();
    let page = dir.join("report.html");
    let g = root().join("traces/vllm_ngram_13step.json");
    let (code, _, err) = cli(&["report", g.to_str().unwrap(), b.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let l = load(&page, None);
    assert!(l.console.is_empty() && l.requests.is_empty());
    assert!(l.dom.contains("class=\"diverge\" data-step=\"7\""), "no divergence box");
    assert_eq!(l.dom.matches("class=\"divergence\" data-step=\"7\"").count(), 2, "highlight in both timelines");
    assert_eq!(l.dom.matches("<section class=\"trace\">").count(), 2);
}

#[test]
fn large_run_is_aggregated_not_a_wall_of_boxes() {
    let dir = tmp("large");
    let reqs: Vec<String> = (0..256)
        .map(|i| {
            format!(
                r#"{{"req_id": "r{i}", "prompt_token_ids": [{}, 1, 2], "max_tokens": 300, "ignore_eos": true}}"#,
                i % 7
            )
        })
        .collect();
    let sc = dir.join("big.json");
    std::fs::write(
        &sc,
        format!(
            r#"{{"config": {{"max_model_len": 512, "max_num_seqs": 256}}, "requests": [{}],
               "oracle": {{"kind": "synthetic", "seed": 3, "vocab_size": 50, "order": 2}}}}"#,
            reqs.join(",")
        ),
    )
    .unwrap();
    let tr = dir.join("big.bin");
    let (code, _, err) = cli(&["sim", sc.to_str().unwrap(), "-o", tr.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let t = trace::read(&tr).unwrap();
    assert!(t.steps.len() >= 300 && t.steps.iter().any(|s| s.batch_req_ids.len() == 256), "{}", t.steps.len());
    let page = dir.join("big.html");
    assert_eq!(cli(&["report", tr.to_str().unwrap(), "-o", page.to_str().unwrap()]).0, 0);
    let l = load(&page, None);
    assert!(l.console.is_empty() && l.requests.is_empty());
    assert!(l.dom.contains("data-aggregated=\"true\""));
    let agg = l.dom.matches("class=\"cell agg\"").count();
    assert!(cells(&l.dom).is_empty() && agg > 0 && agg <= 300 * 32, "{agg} aggregated cells");
    assert!(std::fs::metadata(&page).unwrap().len() < 4 << 20);
}
