//! Every fenced block of `README.md` and `docs/*.md` is executed or explicitly marked as
//! illustrative, so a documented snippet that stops working fails CI (issue 12 item 1).
//!
//! The language tag of a block says what it is:
//! * `json`: a scenario; it is run with `specreplay sim` and must succeed.
//! * `sh`: command lines. `specreplay ...` lines whose arguments are all concrete (no
//!   placeholder such as `TRACE` or `[--note TEXT]`) run against the built binary, with
//!   committed files resolved from the repository root and outputs written to a temporary
//!   directory; they must exit 0, or N when the line ends in `# exit N`. A line with
//!   placeholders checks that its subcommand exists (`--help`). `bash FILE` lines check
//!   that the script is committed; other tools (`cargo`) are not run.
//! * `console`: `$ `-prefixed lines are commands as in `sh`; other lines are output
//!   (not compared).
//! * `text`: illustrative output, not run.
//!
//! An untagged block or an unknown tag fails, so every new block gets a decision.

use std::path::{Path, PathBuf};

mod common;
use common::root;

struct Block {
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file.strip_prefix(root()).unwrap_or(&self.file).display(), self.line)
    }
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The fenced blocks of a Markdown file.
fn blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("```") else {
            if let Some(b) = open.as_mut() {
                b.body.push_str(line);
                b.body.push('\n');
            }
            continue;
        };
        match open.take() {
            Some(b) => out.push(b),
            None => {
                open =
                    Some(Block { file: file.to_path_buf(), line: i + 1, lang: rest.trim().into(), body: String::new() })
            }
        }
    }
    assert!(open.is_none(), "{}: unclosed fenced block", file.display());
    out
}

/// Splits a command line into words (double quotes group; no other shell syntax).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// A command line without its trailing `# comment`, and the exit code that comment
/// announces (`# exit N`), if any.
fn strip_comment(line: &str) -> (&str, Option<i32>) {
    match line.find(" #") {
        Some(i) => {
            let comment = line[i + 2..].trim();
            (line[..i].trim(), comment.strip_prefix("exit ").and_then(|n| n.trim().parse().ok()))
        }
        None => (line.trim(), None),
    }
}

/// A placeholder argument: `[optional]`, `X...`, or a name in capitals (`TRACE`,
/// `SCENARIO.json`, `V`).
fn is_placeholder(arg: &str) -> bool {
    if arg.starts_with('-') {
        return false;
    }
    let stem = arg.split('.').next().unwrap_or("");
    arg.contains('[')
        || arg.contains("...")
        || (stem.chars().any(|c| c.is_ascii_uppercase()) && !stem.chars().any(|c| c.is_ascii_lowercase()))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-docs-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs (or checks) one documented command line; returns whether it was executed.
fn command(b: &Block, line: &str, cwd: &Path) -> bool {
    let (cmd, want) = strip_comment(line);
    let w = words(cmd);
    let Some(prog) = w.first() else { return false };
    match prog.as_str() {
        "specreplay" => {
            let args = &w[1..];
            let bin = env!("CARGO_BIN_EXE_specreplay");
            if args.iter().any(|a| is_placeholder(a)) {
                let sub = args.first().unwrap_or_else(|| panic!("{}: `specreplay` without a subcommand", b.at()));
                let out = std::process::Command::new(bin).args([sub.as_str(), "--help"]).output().unwrap();
                assert!(out.status.success(), "{}: documented subcommand `{sub}` does not exist", b.at());
                return false;
            }
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    let p = root().join(a);
                    if !a.starts_with('-') && a.contains('/') && p.exists() {
                        p.to_string_lossy().into_owned()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let out = std::process::Command::new(bin).args(&args).current_dir(cwd).output().unwrap();
            let mut code = out.status.code().unwrap_or(-1);
            let no_driver =
                String::from_utf8_lossy(&out.stderr).starts_with("specreplay: error: no CUDA driver found: ");
            if args.first().is_some_and(|a| a == "gpu") && code == 3 && no_driver {
                // A GPU command on a machine without a driver: its documented one line, exit 3.
                code = want.unwrap_or(0);
            }
            assert_eq!(
                code,
                want.unwrap_or(0),
                "{}: `{cmd}` exited {code}\nstdout: {}\nstderr: {}",
                b.at(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        "bash" => {
            let script = w.get(1).unwrap_or_else(|| panic!("{}: `bash` without a script", b.at()));
            assert!(root().join(script).is_file(), "{}: {script} is not committed", b.at());
            false
        }
        _ => false,
    }
}

/// Runs a scenario block through `specreplay sim`; returns the resolved scenario.
fn scenario(b: &Block, cwd: &Path) -> specreplay_sim::Scenario {
    let v: serde_json::Value =
        serde_json::from_str(&b.body).unwrap_or_else(|e| panic!("{}: json block does not parse: {e}", b.at()));
    for key in ["config", "requests", "oracle"] {
        assert!(v.get(key).is_some(), "{}: a json block must be a scenario (no `{key}`); tag others `text`", b.at());
    }
    let path = cwd.join(format!("block{}.json", b.line));
    std::fs::write(&path, &b.body).unwrap();
    let out = cwd.join(format!("block{}.trace.json", b.line));
    let (code, _, err) = common::cli(&["sim", path.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: the scenario does not run as written: {err}", b.at());
    specreplay_sim::Scenario::from_json(&b.body).unwrap()
}

#[test]
fn every_documented_snippet_runs() {
    let (mut scenarios, mut commands, mut skipped) = (0, 0, 0);
    for file in doc_files() {
        for b in blocks(&file) {
            let cwd = tmpdir(&format!("{}-{}", file.file_stem().unwrap().to_string_lossy(), b.line));
            match b.lang.as_str() {
                "json" => {
                    scenario(&b, &cwd);
                    scenarios += 1;
                }
                "sh" => {
                    for line in b.body.lines() {
                        commands += usize::from(command(&b, line, &cwd));
                    }
                }
                "console" => {
                    for line in b.body.lines().filter_map(|l| l.strip_prefix("$ ")) {
                        commands += usize::from(command(&b, line, &cwd));
                    }
                }
                "text" => skipped += 1,
                "" => panic!("{}: untagged fenced block: tag it json, sh, console or text", b.at()),
                other => panic!("{}: unknown block tag `{other}` (json, sh, console or text)", b.at()),
            }
            let _ = std::fs::remove_dir_all(&cwd);
        }
    }
    // README: two scenarios, `explain --list` and the three example commands;
    // docs/seed-002-revert.md: one `explain`.
    assert!(scenarios >= 2 && commands >= 5, "{scenarios} scenarios, {commands} commands, {skipped} text blocks");
}

/// What the README says about its second example holds.
#[test]
fn readme_capture_list_claim_holds() {
    let b = blocks(&root().join("README.md"))
        .into_iter()
        .find(|b| b.lang == "json" && b.body.contains("\"synthetic\""))
        .expect("the README's synthetic example");
    let sc = scenario(&b, &tmpdir("claim"));
    assert_eq!(sc.config.cudagraph_capture_sizes, [4, 8, 16, 32]);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("Here the capture list becomes `[4, 8, 16, 32]`"));
}

#[test]
fn snippet_parsing() {
    let w = words(r#"specreplay sim a.json -o b.json --note "two words""#);
    assert_eq!((w.len(), w[6].as_str()), (7, "two words"));
    assert_eq!(
        strip_comment("specreplay explain x --variant y      # exit 1"),
        ("specreplay explain x --variant y", Some(1))
    );
    assert_eq!(strip_comment("specreplay replay T   # exit 0 identical, 1 otherwise").1, None);
    for p in ["TRACE", "SCENARIO.json", "TRACE...", "[--note", "V", "IN"] {
        assert!(is_placeholder(p), "{p}");
    }
    for a in ["scenarios/x.json", "--list", "seed004.json", "nsa-draft-extend", "uniform-qo"] {
        assert!(!is_placeholder(a), "{a}");
    }
}
