//! The name state machine without DNS: what an answer, a definitive "no"
//! and a failure to get an answer each do to the address in force and the
//! schedule. (The lookups themselves run against a real dnsmasq in
//! tests/tests/dns_targets_e2e.rs.)
use std::{net::Ipv4Addr, time::Duration};

use tokio::time::Instant;

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn answer(addrs: &[&str], ttl: u32) -> Outcome {
    Outcome::Answer {
        addrs: addrs.iter().map(|a| ip(a)).collect(),
        ttl,
    }
}

const T0: u64 = 1_700_000_000;

#[test]
fn the_lowest_address_is_used_whatever_order_the_server_answers_in() {
    let now = Instant::now();
    let mut s = NameState::new(now, T0);
    assert_eq!(s.fact.state(), "resolving");
    assert!(s.record(
        answer(&["10.43.0.9", "10.43.0.7", "10.43.0.8"], 30),
        now,
        T0
    ));
    assert_eq!(s.fact.addr, Some(ip("10.43.0.7")));
    assert_eq!(
        s.fact.answers,
        [ip("10.43.0.7"), ip("10.43.0.8"), ip("10.43.0.9")]
    );
    // A round-robin server rotates the order: nothing changes.
    assert!(!s.record(
        answer(&["10.43.0.8", "10.43.0.9", "10.43.0.7"], 30),
        now,
        T0
    ));
    assert_eq!(s.fact.addr, Some(ip("10.43.0.7")));
    assert_eq!(s.fact.changes, 0);
    assert_eq!(s.fact.state(), "resolved");
}

#[test]
fn the_next_lookup_follows_the_ttl_within_floor_and_ceiling() {
    let now = Instant::now();
    for (ttl, wait) in [
        (0, TTL_FLOOR),
        (5, Duration::from_secs(5)),
        (86_400, TTL_CEILING),
    ] {
        let mut s = NameState::new(now, T0);
        s.record(answer(&["10.0.0.1"], ttl), now, T0);
        assert_eq!(s.next - now, wait, "ttl {ttl}");
        assert_eq!(s.fact.next_unix, T0 + wait.as_secs());
        assert_eq!(s.fact.ttl, Some(ttl));
        assert_eq!(s.fact.resolved_unix, Some(T0));
    }
}

#[test]
fn a_changed_answer_moves_the_address_and_is_counted() {
    let now = Instant::now();
    let mut s = NameState::new(now, T0);
    s.record(answer(&["10.43.0.7"], 5), now, T0);
    assert!(s.record(answer(&["10.43.0.99"], 5), now, T0 + 5));
    assert_eq!(s.fact.addr, Some(ip("10.43.0.99")));
    assert_eq!(s.fact.changes, 1);
}

#[test]
fn nxdomain_or_no_a_record_pauses_at_once_and_retries_with_a_backoff() {
    for failure in [
        Failure::NxDomain,
        Failure::NoData { v6_only: false },
        Failure::NoData { v6_only: true },
    ] {
        let now = Instant::now();
        let mut s = NameState::new(now, T0);
        s.record(answer(&["10.43.0.7"], 300), now, T0);
        assert!(s.record(Outcome::Failed(failure.clone()), now, T0));
        assert_eq!(s.fact.addr, None, "{failure}");
        assert_eq!(
            s.fact.last_addr,
            Some(ip("10.43.0.7")),
            "the flows' address"
        );
        assert!(s.fact.answers.is_empty());
        assert_eq!(s.fact.state(), "paused");
        assert_eq!(s.fact.error.as_ref(), Some(&failure));
        // 1 s, 2 s, 4 s, 8 s, then 10 s for good.
        let mut waits = vec![s.next - now];
        for _ in 0..5 {
            assert!(!s.record(Outcome::Failed(failure.clone()), now, T0));
            waits.push(s.next - now);
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        assert_eq!(s.fact.failures, 6);
        // Resolving again resumes, and resets the backoff.
        assert!(s.record(answer(&["10.43.0.8"], 5), now, T0));
        assert_eq!(s.fact.state(), "resolved");
        s.record(Outcome::Failed(failure.clone()), now, T0);
        assert_eq!(s.next - now, RETRY_FIRST);
    }
}

#[test]
fn a_failure_to_get_an_answer_keeps_the_last_address_as_stale() {
    for failure in [
        Failure::ServFail,
        Failure::Refused,
        Failure::Timeout,
        Failure::Other("lookup failed: io error".into()),
    ] {
        let now = Instant::now();
        let mut s = NameState::new(now, T0);
        s.record(answer(&["10.43.0.7"], 5), now, T0);
        assert!(!s.record(Outcome::Failed(failure.clone()), now, T0 + 5));
        assert_eq!(s.fact.addr, Some(ip("10.43.0.7")), "{failure}");
        assert_eq!(s.fact.state(), "stale");
        assert_eq!(s.fact.resolved_unix, Some(T0), "still the last good answer");
        assert_eq!(s.next - now, RETRY_FIRST);
        // The server is back with the same answer: resolved, nothing moves.
        assert!(!s.record(answer(&["10.43.0.7"], 5), now, T0 + 6));
        assert_eq!(s.fact.state(), "resolved");
        assert_eq!(s.fact.error, None);
    }
}

#[test]
fn a_name_that_never_resolved_is_paused_by_any_failure() {
    let now = Instant::now();
    let mut s = NameState::new(now, T0);
    assert!(!s.record(Outcome::Failed(Failure::Timeout), now, T0));
    assert_eq!(s.fact.addr, None);
    assert_eq!(s.fact.state(), "paused");
    assert!(!s.fact.pending);
}

#[test]
fn an_adopted_address_stands_in_for_the_first_answer() {
    let now = Instant::now();
    let adopted = || {
        let mut s = NameState::new(now, T0);
        s.adopt(ip("10.43.0.7"));
        assert_eq!(s.fact.state(), "adopted");
        assert_eq!(s.fact.addr, Some(ip("10.43.0.7")));
        s
    };
    // The DNS server cannot be reached after a restart: kept, stale.
    let mut s = adopted();
    assert!(!s.record(Outcome::Failed(Failure::Timeout), now, T0));
    assert_eq!(
        (s.fact.state(), s.fact.addr),
        ("stale", Some(ip("10.43.0.7")))
    );
    // The same answer: resolved, nothing moves.
    let mut s = adopted();
    assert!(!s.record(answer(&["10.43.0.7"], 5), now, T0));
    assert_eq!((s.fact.state(), s.fact.changes), ("resolved", 0));
    // Another answer: it moves, counted.
    let mut s = adopted();
    assert!(s.record(answer(&["10.43.0.9"], 5), now, T0));
    assert_eq!((s.fact.addr, s.fact.changes), (Some(ip("10.43.0.9")), 1));
    // The name is gone: paused, as for any name that had an address.
    let mut s = adopted();
    assert!(s.record(Outcome::Failed(Failure::NxDomain), now, T0));
    assert_eq!((s.fact.state(), s.fact.addr), ("paused", None));
    // Once a lookup has finished, the maps say nothing new: no effect.
    s.adopt(ip("10.43.0.7"));
    assert_eq!(s.fact.addr, None);
}

#[test]
fn an_answer_without_addresses_counts_as_no_a_record() {
    let now = Instant::now();
    let mut s = NameState::new(now, T0);
    s.record(answer(&["10.0.0.1"], 5), now, T0);
    assert!(s.record(
        Outcome::Answer {
            addrs: vec![],
            ttl: 5
        },
        now,
        T0
    ));
    assert_eq!(s.fact.error, Some(Failure::NoData { v6_only: false }));
}

#[tokio::test(flavor = "current_thread")]
async fn names_follow_the_rules_and_a_new_server_makes_every_name_due() {
    let mut n = Names::default();
    n.configure(["a.lan".to_string(), "b.lan".to_string()], &[]);
    assert!(n.next_due().is_some_and(|d| d <= Instant::now()));
    // Pretend both resolved: nothing is due for a while.
    let now = Instant::now();
    for s in n.names.values_mut() {
        s.record(answer(&["10.0.0.1"], 60), now, T0);
    }
    assert!(n.next_due().unwrap() > now + Duration::from_secs(59));
    // A reload that drops one name and adds another: the new one is due,
    // the kept one keeps its answer.
    n.configure(["b.lan".to_string(), "c.lan".to_string()], &[]);
    let f = n.facts();
    assert_eq!(f.keys().collect::<Vec<_>>(), ["b.lan", "c.lan"]);
    assert_eq!(f["b.lan"].addr, Some(ip("10.0.0.1")));
    assert_eq!(f["c.lan"].state(), "resolving");
    // Another server: every name is asked again at once.
    for s in n.names.values_mut() {
        s.record(answer(&["10.0.0.1"], 60), now, T0);
    }
    n.configure(
        ["b.lan".to_string(), "c.lan".to_string()],
        &["10.43.0.10:53".parse().unwrap()],
    );
    assert!(n.next_due().is_some_and(|d| d <= Instant::now()));
    // A lookup started under the old servers reports into an epoch that is
    // over: dropped, also while a lookup of the new epoch is in flight.
    assert!(!n.record(("b.lan".into(), 0, answer(&["10.9.9.9"], 5))));
    n.in_flight.insert("b.lan".into(), n.epoch);
    assert!(!n.record(("b.lan".into(), 0, answer(&["10.9.9.9"], 5))));
    assert_eq!(n.facts()["b.lan"].addr, Some(ip("10.0.0.1")));
    assert!(n.record(("b.lan".into(), n.epoch, answer(&["10.9.9.9"], 5))));
}
