//! Port numbers and ranges: `port = 80`, `port = "30000-32767"`,
//! `snat_ports`, and the port of a `to` target. Port 0 is never a port here.

use crate::model::PortRange;

#[derive(Debug)]
pub(crate) struct PortError {
    pub message: String,
    pub help: String,
}

impl PortError {
    pub(crate) fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        PortError {
            message: message.into(),
            help: help.into(),
        }
    }
}

pub(crate) const PORT_HELP: &str = "use a port between 1 and 65535";

pub(crate) fn parse_port_int(n: i64) -> Result<PortRange, PortError> {
    match u16::try_from(n) {
        Ok(0) => Err(PortError::new("port 0 is not a valid port", PORT_HELP)),
        Ok(p) => Ok(PortRange::single(p).expect("non-zero")),
        Err(_) => Err(PortError::new(
            format!("port {n} is out of range"),
            PORT_HELP,
        )),
    }
}

pub(crate) fn parse_one_port(s: &str) -> Result<u16, PortError> {
    let s = s.trim();
    let n: i64 = s
        .parse()
        .map_err(|_| PortError::new(format!("`{s}` is not a port number"), PORT_HELP))?;
    parse_port_int(n).map(PortRange::start)
}

/// `"80"` or `"30000-32767"`.
pub(crate) fn parse_port_spec(s: &str) -> Result<PortRange, PortError> {
    if let Some((a, b)) = s.split_once(':') {
        return Err(PortError::new(
            format!("`{s}` is not a port range"),
            format!("ranges use a dash: \"{}-{}\"", a.trim(), b.trim()),
        ));
    }
    match s.split_once('-') {
        None => parse_one_port(s).map(|p| PortRange::single(p).expect("non-zero")),
        Some((a, b)) => {
            let (a, b) = (parse_one_port(a)?, parse_one_port(b)?);
            PortRange::new(a, b).ok_or_else(|| {
                PortError::new(
                    format!("port range {a}-{b} is reversed"),
                    format!("write \"{b}-{a}\""),
                )
            })
        }
    }
}
