//! The nftables text form, through nft itself: loaded into a throwaway
//! network namespace and listed back as JSON (see `nft.rs` for why), with
//! the text's line numbers recovered from its chain blocks.

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
};

pub fn looks_like_text(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim_start();
        (t.starts_with("table ") && t.trim_end().ends_with('{'))
            || t.starts_with("#!/usr/sbin/nft")
            || t.starts_with("flush ruleset")
    })
}

/// Text ruleset to `nft -j list ruleset` JSON, through nft in a private
/// network namespace (a user namespace too when not root).
pub fn load_text(text: &str) -> Result<String, String> {
    let root = unsafe_free_is_root();
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args([
        "--net",
        "--",
        "sh",
        "-c",
        "nft -f - && exec nft -j list ruleset",
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("reading the nftables text form needs `unshare` and `nft` ({e}): install nftables, or import `nft -j list ruleset` output instead"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nft could not load this ruleset (in a private namespace): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut json = String::from_utf8_lossy(&out.stdout).into_owned();
    json.push('\n');
    json.push_str(&format!(
        "//lines {}",
        serde_json::to_string(&line_map(text)).unwrap_or_default()
    ));
    Ok(json)
}

fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// (family table chain) -> the text lines of its rules, in order.
fn line_map(text: &str) -> HashMap<String, Vec<(usize, String)>> {
    let mut map: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    let (mut table, mut chain) = (None::<String>, None::<String>);
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if words.first() == Some(&"table") && t.ends_with('{') {
            let (fam, name) = if words.len() >= 4 {
                (words[1], words[2])
            } else {
                ("ip", words.get(1).copied().unwrap_or(""))
            };
            table = Some(format!("{fam} {name}"));
        } else if words.first() == Some(&"chain") && t.ends_with('{') {
            chain = words.get(1).map(|s| s.to_string());
        } else if t == "}" {
            if chain.take().is_none() {
                table = None;
            }
        } else if let (Some(tb), Some(ch)) = (&table, &chain) {
            if !(t.is_empty()
                || t.starts_with('#')
                || t.starts_with("type ")
                || t.starts_with("policy ")
                || t.starts_with("comment "))
            {
                map.entry(format!("{tb} {ch}"))
                    .or_default()
                    .push((i + 1, t.to_owned()));
            }
        }
    }
    map
}
