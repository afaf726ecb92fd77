//! The client tools' command lines, built by one function each and used
//! both to run them and to document them in the report (with TARGET for
//! the address).
use super::Durations;
use crate::bench::topology::{pinned, CLIENT_CPU, PORT_HTTP, PORT_IPERF, PORT_SOCKPERF, RTT_CPU};

/// wrk's concurrency: enough open connections to keep one client thread
/// busy, few enough that the 2-vCPU machine is not just context switching.
const WRK_CONNS: u32 = 32;
/// Small-packet test: UDP payload bytes (IPv4 packet: 92 bytes).
pub const UDP_PAYLOAD: u32 = 64;

pub fn iperf_tcp_argv(target: &str, streams: u32, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            &PORT_IPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )
}

pub fn iperf_udp_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            &PORT_IPERF.to_string(),
            "-u",
            "-l",
            &UDP_PAYLOAD.to_string(),
            "-b",
            "0",
            "-t",
            &secs.to_string(),
            "-J",
        ],
    )
}

pub fn wrk_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "wrk",
            "-t1",
            &format!("-c{WRK_CONNS}"),
            &format!("-d{secs}s"),
            "--timeout",
            "2s",
            "-H",
            "Connection: close",
            &format!(
                "http://{}:{PORT_HTTP}/",
                crate::bench::configs::ipv6::url_host(target)
            ),
        ],
    )
}

pub fn sockperf_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        RTT_CPU,
        &[
            "sockperf",
            "ping-pong",
            "--tcp",
            "-i",
            target,
            "-p",
            &PORT_SOCKPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-m",
            "64",
            "--full-rtt",
        ],
    )
}

/// The client command lines with TARGET standing for the address the
/// configuration makes the client connect to.
pub fn client_commands(d: &Durations) -> Vec<(String, String)> {
    let t = "TARGET";
    vec![
        (
            "TCP throughput, 1 stream".into(),
            iperf_tcp_argv(t, 1, d.tcp1).join(" "),
        ),
        (
            "TCP throughput, 4 streams".into(),
            iperf_tcp_argv(t, 4, d.tcp4).join(" "),
        ),
        ("new connections".into(), shell_words(&wrk_argv(t, d.wrk))),
        (
            "request/response RTT".into(),
            sockperf_argv(t, d.rtt).join(" "),
        ),
        (
            "small-packet UDP".into(),
            iperf_udp_argv(t, d.udp).join(" "),
        ),
        (
            "BPF time per forwarded packet (forwarder configurations, separate burst)".into(),
            iperf_udp_argv(t, d.bpf).join(" "),
        ),
    ]
}

fn shell_words(v: &[String]) -> String {
    v.iter()
        .map(|w| {
            if w.contains(' ') {
                format!("'{w}'")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report prints these lines as the way to reproduce a run: one
    /// per measurement, with TARGET and the run's durations, and wrk's
    /// header quoted so the line works pasted into a shell.
    #[test]
    fn client_commands_are_pasteable_with_target_and_durations() {
        let lines = client_commands(&Durations::QUICK);
        assert_eq!(lines.len(), 6);
        for (what, line) in &lines {
            assert!(line.contains("TARGET"), "{what}: {line}");
        }
        let wrk = &lines
            .iter()
            .find(|(w, _)| w == "new connections")
            .unwrap()
            .1;
        assert!(wrk.contains("-H 'Connection: close' "), "{wrk}");
        assert!(
            wrk.contains(&format!("-d{}s", Durations::QUICK.wrk)),
            "{wrk}"
        );
        let tcp4 = &lines[1].1;
        assert!(
            tcp4.ends_with(&format!("-t {} -P 4 -J", Durations::QUICK.tcp4)),
            "{tcp4}"
        );
    }
}
