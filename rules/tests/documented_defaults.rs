//! The defaults the docs state are the binary's: the `[global]` example of
//! docs/rules.md (whose comments say "the defaults") and the commented
//! settings of the packaged rules file load to `Global::default()` for
//! every key they document as a default (issue 20: README and
//! docs/rules.md say the same as the binary).
use std::path::Path;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first ```toml block after `heading`.
fn toml_block_after(doc: &str, heading: &str) -> String {
    let rest = &doc[doc.find(heading).expect(heading)..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    rest[start..start + len].to_string()
}

#[test]
fn the_global_example_of_rules_md_shows_the_defaults() {
    let block = toml_block_after(&repo_file("docs/rules.md"), "\n## [global]\n");
    let loaded = rules::load_str("rules.md", &block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let (g, d) = (&loaded.rules.global, &rules::Global::default());
    assert_eq!(g.conntrack_max, d.conntrack_max, "{block}");
    assert_eq!(g.snat_ports, d.snat_ports, "{block}");
    assert_eq!(g.timeouts, d.timeouts, "{block}");
    assert_eq!(g.rules_poll_interval, d.rules_poll_interval, "{block}");
    assert_eq!(g.rules_watch, d.rules_watch, "{block}");
    assert_eq!(g.log_level, d.log_level, "{block}");
    assert_eq!(g.log_format, d.log_format, "{block}");
}

#[test]
fn the_packaged_file_comments_the_default_table_size() {
    let text = repo_file("packaging/rules.toml");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# conntrack_max = "))
        .expect("a commented conntrack_max");
    let n: u32 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(n, forwarder_common::DEFAULT_CONNTRACK_MAX, "{line}");
}
