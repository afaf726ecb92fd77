//! A reload is a transaction: whatever fails half-way, the kernel maps end
//! up holding the old set or the new set, entry for entry, and the daemon's
//! record equals what they hold. Faults are injected into the daemon's own
//! map writes (`daemon::apply`, feature `fault-injection`) on a loaded
//! dataplane in a namespace (the test_run fixture: see tests/src/testrun/
//! for the topology, whose facts the daemon's own facts stage reads);
//! nothing is attached.
use anyhow::{bail, ensure, Context, Result};
use forwarder::daemon::{
    apply::{self, Fault, Faults},
    facts,
    plan::{self, Plan, Record},
};
use forwarder_tests::{require_root, testrun::Host};
use rules::MapOp;

/// A forward on vmbr0's address, SNATed, with /32 allow entries
/// `prefix.{range}` (none: no allow-list).
fn fwd(name: &str, ports: &str, to: &str, prefix: &str, allow: std::ops::Range<u8>) -> String {
    let allow: Vec<String> = allow.map(|i| format!("\"{prefix}.{i}\"")).collect();
    let allow = if allow.is_empty() {
        String::new()
    } else {
        format!("allow = [{}]\n", allow.join(", "))
    };
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\n\
         port = {ports}\nto = \"{to}\"\nsnat = \"192.168.100.1\"\n{allow}\n"
    )
}

/// Forwards of the old file: allow-lists on two of them, one to go.
fn file_a() -> String {
    [
        fwd("web", "\"80-83\"", "192.168.100.80:80", "10.1.0", 0..40),
        fwd("ssh", "2222", "192.168.100.81:22", "10.2.0", 0..20),
        fwd("gone", "\"8080-8089\"", "192.168.100.82", "", 0..0),
    ]
    .concat()
}

/// The new file: web's list half changed, ssh moved to another target with
/// a changed list, gone removed, a new allow-listed forward.
fn file_b() -> String {
    [
        fwd("web", "\"80-83\"", "192.168.100.80:80", "10.1.0", 20..60),
        fwd("ssh", "2222", "192.168.100.90:22", "10.2.0", 10..35),
        fwd("new", "\"9000-9009\"", "192.168.100.83", "10.3.0", 0..30),
    ]
    .concat()
}

fn plan_of(h: &Host, text: &str, record: &Record) -> Result<Plan> {
    let loaded = match rules::load_str("test.toml", text) {
        Ok(l) => l,
        Err(d) => bail!("test rules do not load:\n{d}"),
    };
    let facts = h.facts(
        loaded
            .rules
            .forwards
            .iter()
            .filter_map(|f| f.target.fixed_addr()),
    )?;
    plan::plan(&loaded.rules, &facts, record)
}

/// The kernel maps, read back.
fn kernel(h: &Host) -> Result<Record> {
    facts::read_record(&h.dp.maps)
}

/// Loads file A without faults; its record.
fn with_a(h: &mut Host) -> Result<(Record, Plan)> {
    let mut record = Record::default();
    let a = plan_of(h, &file_a(), &record)?;
    apply::apply_maps(&mut h.dp, &a, &mut record, &mut Faults::default())?;
    ensure!(kernel(h)?.same_maps(&a.record()), "file A in the kernel");
    Ok((record, a))
}

#[test]
fn a_write_failing_at_any_step_rolls_back_to_the_old_set() -> Result<()> {
    if !require_root("a_write_failing_at_any_step_rolls_back_to_the_old_set") {
        return Ok(());
    }
    let mut h = Host::new(1024)?;
    let (mut record, a) = with_a(&mut h)?;
    let b = plan_of(&h, &file_b(), &record)?;
    let steps = b.update.ops.len();
    ensure!(steps > 100, "a reload with many steps: {steps}");
    for at in 0..steps {
        let mut faults = Faults::new(vec![Fault::Write {
            at,
            errno: libc::EIO,
        }]);
        let r = apply::apply_maps(&mut h.dp, &b, &mut record, &mut faults);
        let Err(e) = r else {
            bail!("step {at} of {steps} was to fail");
        };
        let now = kernel(&h)?;
        ensure!(
            now.same_maps(&a.record()),
            "write {at} of {steps} ({:?}) failed: the kernel must hold file A exactly \
             again ({} listeners, {} allow entries, ids {:?})",
            b.update.ops[at],
            now.entries.listeners.len(),
            now.entries.allow.len(),
            now.ids
        );
        ensure!(
            now.same_maps(&record),
            "the record is what the kernel holds"
        );
        ensure!(
            format!("{e:#}").contains("rolled back"),
            "the error says so: {e:#}"
        );
    }
    // And without a fault, exactly file B.
    apply::apply_maps(&mut h.dp, &b, &mut record, &mut Faults::default())?;
    ensure!(kernel(&h)?.same_maps(&b.record()), "file B in the kernel");
    ensure!(record.same_maps(&b.record()), "and in the record");
    Ok(())
}

#[test]
fn a_map_full_half_way_rolls_back_to_the_old_set() -> Result<()> {
    if !require_root("a_map_full_half_way_rolls_back_to_the_old_set") {
        return Ok(());
    }
    let mut h = Host::new(1024)?;
    let (mut record, a) = with_a(&mut h)?;
    let b = plan_of(&h, &file_b(), &record)?;
    // Room for file A's prefixes and a few more, not for B's.
    let room = a.entries.allow.len() + 5;
    ensure!(b.entries.allow.len() > room, "B does not fit the room");
    for fault in [
        Fault::AllowRoom(room),
        Fault::ListenerRoom(a.entries.listeners.len()),
    ] {
        let mut faults = Faults::new(vec![fault.clone()]);
        let e = apply::apply_maps(&mut h.dp, &b, &mut record, &mut faults)
            .expect_err("the map fills up");
        ensure!(
            kernel(&h)?.same_maps(&a.record()),
            "{fault:?}: the kernel holds file A exactly again ({e:#})"
        );
        ensure!(kernel(&h)?.same_maps(&record), "{fault:?}: record = kernel");
    }
    Ok(())
}

#[test]
fn when_the_rollback_fails_too_the_record_is_the_kernel_and_the_next_load_cleans_up() -> Result<()>
{
    if !require_root(
        "when_the_rollback_fails_too_the_record_is_the_kernel_and_the_next_load_cleans_up",
    ) {
        return Ok(());
    }
    let mut h = Host::new(1024)?;
    let (mut record, a) = with_a(&mut h)?;
    let b = plan_of(&h, &file_b(), &record)?;
    // Fail half-way through B, then fail the rollback's first write too:
    // B's new rule is named and has prefixes in the kernel.
    let at = b
        .update
        .ops
        .iter()
        .position(|op| matches!(op, MapOp::ListenerWrite(..)))
        .expect("listener writes");
    let mut faults = Faults::new(vec![
        Fault::Write {
            at,
            errno: libc::EIO,
        },
        Fault::Write {
            at: at + 1,
            errno: libc::EIO,
        },
    ]);
    let e = apply::apply_maps(&mut h.dp, &b, &mut record, &mut faults).expect_err("fails");
    ensure!(
        format!("{e:#}").contains("rollback failed too"),
        "the error says the maps hold a mix: {e:#}"
    );
    let mix = kernel(&h)?;
    ensure!(
        !mix.same_maps(&a.record()) && !mix.same_maps(&b.record()),
        "a mix"
    );
    ensure!(mix.same_maps(&record), "the record is exactly the mix");
    let stale_id = mix.ids["new"];
    ensure!(
        mix.entries
            .allow
            .keys()
            .any(|k| u32::from_be(k.data.rule_id_be) == stale_id),
        "B's new rule left prefixes behind"
    );

    // Back to file A: from the re-read record, exactly A again.
    let back = plan_of(&h, &file_a(), &record)?;
    apply::apply_maps(&mut h.dp, &back, &mut record, &mut Faults::default())?;
    ensure!(kernel(&h)?.same_maps(&a.record()), "file A exactly");

    // A later forward that takes the id B's rule had must not inherit its
    // prefixes: it gets exactly its own.
    let late = format!(
        "{}\n[[forward]]\nname = \"late\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\n\
         port = 7000\nto = \"192.168.100.84\"\nsnat = \"192.168.100.1\"\nallow = [\"10.9.9.9\"]\n",
        file_a()
    );
    let c = plan_of(&h, &late, &record)?;
    ensure!(
        c.ids["late"] == stale_id,
        "the test means the same id: {:?} vs {stale_id}",
        c.ids
    );
    apply::apply_maps(&mut h.dp, &c, &mut record, &mut Faults::default())?;
    let now = kernel(&h)?;
    let of_late: Vec<_> = now
        .entries
        .allow
        .keys()
        .filter(|k| u32::from_be(k.data.rule_id_be) == stale_id)
        .collect();
    ensure!(
        of_late.len() == 1,
        "rule late (id {stale_id}) has exactly its one prefix, not B's stale ones: {of_late:?}"
    );
    ensure!(now.same_maps(&c.record()), "file C exactly");
    Ok(())
}

/// The daemon around the transaction: a reload whose writes fail says
/// "failed" (status file, metrics), never "applied", and keeps the old
/// configuration in force and in the maps.
#[test]
fn a_reload_whose_writes_fail_says_failed_and_keeps_the_old_maps() -> Result<()> {
    if !require_root("a_reload_whose_writes_fail_says_failed_and_keeps_the_old_maps") {
        return Ok(());
    }
    use forwarder::{
        daemon::{load_rules, Daemon},
        dataplane::{Dataplane, LoadOptions},
        observe::{metrics, status},
    };
    // The namespace of the fixture (this thread is in it now); the daemon
    // gets a dataplane of its own there and attaches to its interfaces.
    let _h = Host::new(1024)?;
    let dir = forwarder_tests::topology::TempDir::new("reload-faults")?;
    let path = dir.file("rules.toml");
    let run_dir = dir.file("run");
    std::fs::write(&path, file_a())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dp = Dataplane::load(&LoadOptions::default())?;
        let loaded = load_rules(&path).map_err(anyhow::Error::msg)?;
        let mut d = Daemon::new(dp, path.clone(), run_dir.clone(), loaded)?;
        d.start().await?;
        let a = facts::read_record(&d.dp.maps)?;
        ensure!(!a.entries.allow.is_empty(), "file A loaded");

        std::fs::write(&path, file_b())?;
        d.faults = Faults::new(vec![Fault::Write {
            at: 40,
            errno: libc::EIO,
        }]);
        ensure!(d.reload("test").await.is_err(), "the reload fails");
        let st = status::read(&run_dir)?;
        let last = st.last_load.clone().context("a load result")?;
        ensure!(!last.applied, "status says failed: {last:?}");
        ensure!(
            last.summary.contains("rolled back"),
            "and that it was rolled back: {last:?}"
        );
        ensure!(
            st.rules_error
                .as_deref()
                .is_some_and(|e| e.contains("injected")),
            "the error is kept for `status` and `reload`: {:?}",
            st.rules_error
        );
        ensure!(!metrics::config_ok(Some(&st)), "metrics say failed");
        ensure!(!last.maps_mixed, "nothing mixed: {last:?}");
        ensure!(
            facts::read_record(&d.dp.maps)?.same_maps(&a),
            "the maps hold file A exactly"
        );

        // The rollback fails too: the status says the maps hold a mix, and
        // the retry of the event loop (a reconcile) restores file A.
        d.faults = Faults::new(vec![
            Fault::Write {
                at: 40,
                errno: libc::EIO,
            },
            Fault::Write {
                at: 41,
                errno: libc::EIO,
            },
        ]);
        ensure!(d.reload("test").await.is_err(), "the reload fails");
        ensure!(d.failed(), "and is to be retried");
        let last = status::read(&run_dir)?.last_load.context("a load result")?;
        ensure!(
            !last.applied && last.maps_mixed,
            "status says the maps hold a mix: {last:?}"
        );
        ensure!(
            !facts::read_record(&d.dp.maps)?.same_maps(&a),
            "a mix indeed"
        );
        d.faults = Faults::default();
        d.reconcile().await?;
        ensure!(
            facts::read_record(&d.dp.maps)?.same_maps(&a),
            "the retry restores file A exactly"
        );

        d.faults = Faults::default();
        d.reload("test").await?;
        let st = status::read(&run_dir)?;
        ensure!(
            st.last_load.as_ref().is_some_and(|l| l.applied),
            "then it applies"
        );
        ensure!(metrics::config_ok(Some(&st)), "metrics say applied");
        anyhow::Ok(())
    })
}
