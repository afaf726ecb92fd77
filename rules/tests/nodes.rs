//! `nodes` (forwards scoped to cluster nodes) and the `[global]` keys of
//! rules-file watching: the exact messages and where they point.

use std::time::Duration;

use rules::{load_str, to_toml, RulesWatch};

const FILE: &str = "rules.toml";

fn errors(text: &str) -> Vec<String> {
    match load_str(FILE, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.errors().map(|e| e.render(FILE)).collect(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    match load_str(FILE, text) {
        Ok(l) => l.warnings.items.iter().map(|e| e.render(FILE)).collect(),
        Err(d) => panic!("{d}"),
    }
}

/// A forward named `name` on vmbr0 port `port`, with `extra` lines (the
/// forward's first line is the `[[forward]]` header).
fn fwd(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.100\"\nport = {port}\nto = \"192.168.100.80:80\"\n{extra}"
    )
}

#[test]
fn nodes_parse_as_a_list_or_one_string_and_print_back() {
    let text = fwd("web", 80, "nodes = [\"pve-alpha\", \"pve-beta.lan\"]\n")
        + &fwd("ssh", 22, "nodes = \"pve-gamma\"\n");
    let l = load_str(FILE, &text).unwrap();
    assert_eq!(l.rules.forwards[0].nodes, ["pve-alpha", "pve-beta.lan"]);
    assert_eq!(l.rules.forwards[1].nodes, ["pve-gamma"]);
    let printed = to_toml(&l.rules);
    assert!(
        printed.contains("nodes = [\"pve-alpha\", \"pve-beta.lan\"]"),
        "{printed}"
    );
    assert_eq!(load_str(FILE, &printed).unwrap().rules, l.rules);
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    assert_eq!(
        errors(&fwd("web", 80, "node = [\"pve-alpha\"]\n")),
        ["rules.toml:7:1: error: forward \"web\": unknown key `node` in [[forward]]\n  help: did you mean `nodes`?"]
    );
}

#[test]
fn bad_node_names_and_empty_lists_are_errors() {
    assert_eq!(
        errors(&fwd("web", 80, "nodes = [\"pve_alpha\", 3]\n")),
        [
            "rules.toml:7:10: error: forward \"web\": `pve_alpha` is not a valid node name\n  help: use the node's hostname (`hostname`), or its Kubernetes node name: letters, digits and `-`, in dot-separated labels",
            "rules.toml:7:23: error: forward \"web\": node names must be strings\n  help: e.g. nodes = [\"pve-alpha\"]",
        ]
    );
    assert_eq!(
        errors(&fwd("web", 80, "nodes = []\n")),
        ["rules.toml:7:9: error: forward \"web\": an empty nodes list would apply the forward on no node\n  help: remove `nodes` to apply it on every node, or name the nodes (their hostnames)"]
    );
}

#[test]
fn a_node_name_used_once_next_to_a_close_one_is_flagged() {
    let text = fwd("a", 80, "nodes = [\"pve-alpha\"]\n")
        + &fwd("b", 81, "nodes = [\"pve-alpha\"]\n")
        + &fwd("c", 82, "nodes = [\"pve-alhpa\", \"pve-alhpa\"]\n");
    assert_eq!(
        warnings(&text),
        [
            "rules.toml:21:10: warning: forward \"c\": node \"pve-alhpa\" appears only here, while other forwards name \"pve-alpha\"\n  help: did you mean \"pve-alpha\"? A misspelt node name scopes the forward to a node that does not exist",
            "rules.toml:21:23: warning: forward \"c\": node \"pve-alhpa\" is listed twice\n  help: remove the duplicate",
        ]
    );
    // Names far apart are just different nodes.
    let text = fwd("a", 80, "nodes = [\"pve-alpha\"]\n")
        + &fwd("b", 81, "nodes = [\"pve-alpha\"]\n")
        + &fwd("c", 82, "nodes = [\"ichigo\"]\n");
    assert!(warnings(&text).is_empty());
}

/// One shared file: the same listener on two nodes, each to its own VM.
#[test]
fn the_same_listener_on_disjoint_nodes_is_no_overlap() {
    let text = fwd("web-alpha", 80, "nodes = [\"pve-alpha\"]\n")
        + &fwd("web-beta", 80, "nodes = [\"pve-beta\"]\n");
    assert!(load_str(FILE, &text).is_ok());
    let text = fwd("web-alpha", 80, "nodes = [\"pve-alpha\"]\n")
        + &fwd("web-both", 80, "nodes = [\"pve-beta\", \"PVE-Alpha\"]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("rules.toml:12:8: error: forward \"web-both\": tcp port 80 on vmbr0 (192.168.1.100) overlaps forward \"web-alpha\""),
        "{e:#?}"
    );
    // A forward without `nodes` runs everywhere, so it collides with both.
    let text = fwd("web-alpha", 80, "nodes = [\"pve-alpha\"]\n") + &fwd("web", 80, "");
    assert_eq!(errors(&text).len(), 1);
}

#[test]
fn rules_watch_and_poll_interval() {
    let l = load_str(
        FILE,
        "[global]\nrules_watch = \"poll\"\nrules_poll_interval = \"500ms\"\n",
    )
    .unwrap();
    assert_eq!(l.rules.global.rules_watch, RulesWatch::Poll);
    assert_eq!(
        l.rules.global.rules_poll_interval,
        Duration::from_millis(500)
    );
    let d = load_str(FILE, "").unwrap();
    assert_eq!(d.rules.global.rules_watch, RulesWatch::Auto);
    assert_eq!(d.rules.global.rules_poll_interval, Duration::from_secs(2));
    assert_eq!(
        errors("[global]\nrules_watch = \"inotfy\"\nrules_poll_interval = \"10ms\"\n"),
        [
            "rules.toml:2:15: error: global: `inotfy` is not a valid rules_watch\n  help: did you mean `inotify`?",
            "rules.toml:3:23: error: global: rules_poll_interval `10ms` is out of range\n  help: use between \"100ms\" and \"1h\"; the default \"2s\" suits pmxcfs",
        ]
    );
}

#[test]
fn check_shows_the_nodes_of_scoped_forwards() {
    let text = fwd("web", 80, "nodes = [\"pve-alpha\", \"pve-beta\"]\n") + &fwd("ssh", 22, "");
    let table = rules::report::forwards_table(&load_str(FILE, &text).unwrap().rules);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("REJECT  NODES"), "{table}");
    assert!(lines[1].ends_with("pve-alpha,pve-beta"), "{table}");
    assert!(lines[2].ends_with("all"), "{table}");
    // Without `nodes` anywhere the table is as before.
    let table = rules::report::forwards_table(&load_str(FILE, &fwd("ssh", 22, "")).unwrap().rules);
    assert!(!table.contains("NODES"), "{table}");
}
