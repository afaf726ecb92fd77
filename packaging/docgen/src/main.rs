//! `forwarder-docgen OUT_DIR`: man pages and shell completions generated from
//! the CLI definition (`forwarder::cli::Cli`), so they can never disagree
//! with `--help`. `cargo xtask dist` runs it and puts the output in the
//! Debian package.
//!
//! Section 8 (system administration), like iptables(8) and conntrack(8):
//! the daemon and most commands are for root. One page per command,
//! `forwarder-conntrack-list(8)` style, as git and cargo do.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};

const SECTION: &str = "8";

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: forwarder-docgen OUT_DIR")?;
    let mut cmd = forwarder::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    let mut pages = Vec::new();
    man_pages(&cmd, &man, &mut pages)?;
    let comp = out.join("completions");
    fs::create_dir_all(&comp)?;
    for (shell, name) in [
        (Shell::Bash, "forwarder"),
        (Shell::Zsh, "_forwarder"),
        (Shell::Fish, "forwarder.fish"),
    ] {
        let mut f = fs::File::create(comp.join(name))?;
        clap_complete::generate(shell, &mut cmd, "forwarder", &mut f);
        f.flush()?;
    }
    eprintln!(
        "forwarder-docgen: {} man pages, 3 completion scripts in {}",
        pages.len(),
        out.display()
    );
    Ok(())
}

/// One page for `cmd` and, recursively, for each of its subcommands.
fn man_pages(cmd: &clap::Command, dir: &Path, pages: &mut Vec<String>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, pages)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .source(format!("forwarder {}", env!("CARGO_PKG_VERSION")))
        .manual("forwarder manual");
    let mut text = Vec::new();
    page.render(&mut text)?;
    // clap_mangen calls the after-help text EXTRA; ours is examples, or a
    // command's exit status alone.
    let heading = match cmd.get_after_help().map(|h| h.to_string()) {
        Some(h) if h.starts_with("Exit status") => "\n.SH EXIT STATUS\n",
        _ => "\n.SH EXAMPLES\n",
    };
    let mut text = String::from_utf8(text)?.replace("\n.SH EXTRA\n", heading);
    // Sections clap has no notion of go before VERSION (man-pages(7) order).
    let extra = if cmd.get_name() == "forwarder" {
        top_sections(cmd)
    } else {
        see_also(&format!("{}({SECTION})", "forwarder"))
    };
    match text.find("\n.SH VERSION") {
        Some(at) => text.insert_str(at + 1, &extra),
        None => text.push_str(&extra),
    }
    let name = page.get_filename();
    fs::write(dir.join(&name), text).with_context(|| format!("writing {name}"))?;
    pages.push(name);
    Ok(())
}

/// EXIT STATUS, FILES and SEE ALSO of forwarder(8).
fn top_sections(cmd: &clap::Command) -> String {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    // The table the binary itself uses (forwarder::cli::exit).
    for (code, what) in forwarder::cli::exit::EXIT_CODES {
        r.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(*what)]);
    }
    r.control("PP", []).text([roman(
        "With --json, a command that fails prints one JSON object on standard output, \
         {\"error\": {\"kind\", \"message\", \"exit_code\"}} (an invalid rules file adds \
         \"diagnostics\", each with file, line, column, message and help), and exits with \
         the code above. A closed pipe (forwarder status | head) ends a command quietly, \
         as it ends any Unix tool; the daemon ignores it.",
    )]);
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/forwarder/rules.toml",
            "the rules file the packaged service runs with; edits are applied live. \
             The format: /usr/share/doc/forwarder/rules.md",
        ),
        (
            "/usr/share/doc/forwarder/examples/",
            "rules files for a Proxmox host and for a tailnet in front of Kubernetes",
        ),
        (
            "/sys/fs/bpf/forwarder/",
            "pinned maps and program links (--pin-dir); they outlive the daemon so \
             restarts and upgrades are hitless; `forwarder down` removes them",
        ),
        (
            "/run/forwarder/status.json",
            "the daemon's status file (--run-dir): its pid and the result of the last load",
        ),
    ] {
        r.control("TP", []).text([bold(path)]).text([roman(what)]);
    }
    let mut s = r.to_roff();
    let pages: Vec<String> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| format!("forwarder-{}({SECTION})", c.get_name()))
        .chain(["systemctl(1)".into(), "journalctl(1)".into()])
        .collect();
    s.push_str(&see_also(&pages.join(", ")));
    s
}

fn see_also(pages: &str) -> String {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]).text([
        italic(pages),
        roman(", and /usr/share/doc/forwarder/ (README.md, rules.md)"),
    ]);
    r.to_roff()
}
