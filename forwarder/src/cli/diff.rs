//! `forwarder diff [FILE]`: what applying a rules file would change against
//! what runs, before it is applied. It runs the daemon's own pure plan
//! (`daemon::plan`) on the file, this host's facts (rtnetlink, as the
//! daemon reads them) and the record of what the pinned maps hold, and
//! describes the ordered operations with `daemon::changes`: the same
//! summary `forwarder reload` prints after the daemon applied it.
//!
//! The one fact a reader gets wrong: the comparison is with the kernel's
//! maps, not with the file the daemon read last. An edit the daemon
//! rejected, or a forward waiting for its interface, shows as what it
//! would change in the kernel now.
use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use aya::maps::{lpm_trie::LpmTrie, HashMap, IterableMap, Map, MapData};
use forwarder_common::{AllowKey, ListenerKey, ListenerValue, MAP_ALLOW, MAP_LISTENERS};
use rules::{AllowLpmKey, MapEntries, Room};

use super::{exit, offline, pins};
use crate::{
    daemon::{changes, facts, plan, plan::Record, targets},
    observe::{pinned, status},
};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 nothing would change; 1 applying the file would change \
                        the running forwards (listed), or the file is invalid; 3 nothing runs \
                        (no pinned dataplane)."
)]
pub struct DiffArgs {
    /// The rules file (default: the one the running daemon watches).
    pub file: Option<PathBuf>,
    /// Machine-readable output (errors too).
    #[arg(long)]
    pub json: bool,
}

/// What the pinned maps hold, and how many entries they take.
fn pinned_record(pin_dir: &std::path::Path) -> Result<(Record, Room)> {
    let ids = pinned::read_rule_names(pin_dir)?
        .into_iter()
        .map(|(id, name)| (name, id))
        .collect();
    let l: HashMap<MapData, ListenerKey, ListenerValue> =
        HashMap::try_from(Map::HashMap(pinned::open_pinned(pin_dir, MAP_LISTENERS)?))?;
    let a: LpmTrie<MapData, AllowKey, u8> =
        LpmTrie::try_from(Map::LpmTrie(pinned::open_pinned(pin_dir, MAP_ALLOW)?))?;
    let room = Room {
        listeners: l.map().info()?.max_entries() as usize,
        allow: a.map().info()?.max_entries() as usize,
    };
    let mut entries = MapEntries::default();
    for r in l.iter() {
        let (k, v) = r.context("reading FWD_LISTENERS")?;
        entries.listeners.insert(k, v);
    }
    for k in a.keys() {
        let k = k.context("reading FWD_ALLOW")?;
        entries.allow.insert(
            AllowLpmKey {
                prefix_len: k.prefix_len(),
                data: k.data(),
            },
            (),
        );
    }
    Ok((Record { ids, entries }, room))
}

/// The facts `plan` needs about this host: links, addresses, routes to the
/// targets. Attachments do not change map entries and are left out.
fn host_facts(targets: Vec<std::net::IpAddr>, room: Room) -> Result<facts::Facts> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let handle = facts::connect()?;
        let mut routes = BTreeMap::new();
        for t in targets {
            routes.insert(t, facts::route_get(&handle, t).await);
        }
        Ok(facts::Facts {
            links: facts::links(&handle).await?,
            addrs: facts::addrs(&handle).await?,
            // The MSS clamp `auto` computes depends on them.
            route_mtus: facts::route_mtus(&handle).await?,
            routes,
            room,
            ..Default::default()
        })
    })
}

pub fn diff(
    pin_dir: &std::path::Path,
    run_dir: &std::path::Path,
    args: DiffArgs,
) -> Result<ExitCode> {
    pins::require(pin_dir, Some(run_dir))?;
    let daemon = status::read(run_dir).ok();
    let file = match (
        &args.file,
        daemon.as_ref().and_then(|d| d.rules_file.clone()),
    ) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) => f,
        (None, None) => anyhow::bail!(
            "name the rules file: no daemon status in {} says which file runs",
            run_dir.display()
        ),
    };
    crate::node::init(daemon.as_ref().and_then(|d| d.node.clone()));
    let loaded = offline::load(&file, None)?.for_node(crate::node::name());
    let (record, room) = pinned_record(pin_dir)?;
    // `diff` asks no DNS server: a name target is compared at the address
    // the running daemon has in force for it.
    let names = daemon
        .as_ref()
        .map(targets::names_in_force)
        .unwrap_or_default();
    let mut addrs: Vec<_> = loaded
        .rules
        .forwards
        .iter()
        .filter_map(|f| match &f.target.host {
            rules::Host::Addr(a) => Some(*a),
            rules::Host::Name(n) => names.get(n).and_then(|n| n.addr).map(Into::into),
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut facts = host_facts(addrs, room)?;
    facts.names = names;
    let plan = plan::plan(&loaded.rules, &facts, &record)?;
    let running = daemon.map(|d| d.rules).unwrap_or_default();
    let mut c = changes::between(&record, &running, &plan, &BTreeMap::new());
    if c.old_forwards().next().is_some() {
        let (flows, _) = pinned::read_flows(pin_dir)?;
        let per_rule = changes::flows_per_rule(flows.iter().map(|(_, e)| e));
        c = changes::between(&record, &running, &plan, &per_rule);
    }
    if args.json {
        exit::print_json(&serde_json::json!({
            "file": file,
            "changed": !c.is_empty(),
            "changes": c,
        }));
    } else {
        print!("{}", c.render());
    }
    Ok(if c.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILURE)
    })
}
