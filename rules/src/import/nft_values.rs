//! Values in nft JSON: ports, port ranges, sets (anonymous and named),
//! addresses and prefixes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::{ir::PortMap, nft::SetsOf};
use crate::model::PortRange;

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

pub(super) fn port_map(p: &Value) -> Result<PortMap, String> {
    Ok(match p {
        Value::Null => PortMap::Shift(0),
        Value::Number(n) => PortMap::Single(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or("bad port")?,
        ),
        Value::Object(o) if o.contains_key("range") => {
            let r = &o["range"];
            let (a, b) = (r[0].as_u64().unwrap_or(0), r[1].as_u64().unwrap_or(0));
            PortMap::Range(PortRange::new(a as u16, b as u16).ok_or("bad port range")?)
        }
        other => return Err(format!("dnat port {other}: not a form the importer reads")),
    })
}

pub(super) fn ports_of(v: &Value, sets: &SetsOf) -> Result<Vec<PortRange>, String> {
    let bad = || format!("port {v}: not a port, range or set of them");
    match v {
        Value::Number(n) => Ok(vec![n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .and_then(PortRange::single)
            .ok_or_else(bad)?]),
        Value::String(s) if s.starts_with('@') => {
            let elems = sets(s).ok_or_else(|| format!("set {s} is not in the input"))?;
            let mut out = Vec::new();
            for e in elems {
                out.extend(ports_of(&e, sets)?);
            }
            Ok(out)
        }
        Value::Object(o) if o.contains_key("range") => {
            let r = &o["range"];
            Ok(vec![PortRange::new(
                r[0].as_u64().unwrap_or(0) as u16,
                r[1].as_u64().unwrap_or(0) as u16,
            )
            .ok_or_else(bad)?])
        }
        Value::Object(o) if o.contains_key("set") => {
            let mut out = Vec::new();
            for e in o["set"].as_array().into_iter().flatten() {
                out.extend(ports_of(e, sets)?);
            }
            Ok(out)
        }
        Value::Object(o) if o.contains_key("elem") => ports_of(&o["elem"]["val"], sets),
        _ => Err(bad()),
    }
}

pub(super) fn nets_of(v: &Value, sets: &SetsOf) -> Result<Vec<IpNet>, String> {
    let bad = || format!("address {v}: not an address, prefix or set of them");
    match v {
        Value::String(s) if s.starts_with('@') => {
            let elems = sets(s).ok_or_else(|| format!("set {s} is not in the input"))?;
            let mut out = Vec::new();
            for e in elems {
                out.extend(nets_of(&e, sets)?);
            }
            Ok(out)
        }
        Value::String(s) => s
            .parse::<IpAddr>()
            .map(|a| vec![IpNet::from(a)])
            .map_err(|_| bad()),
        Value::Object(o) if o.contains_key("prefix") => {
            let p = &o["prefix"];
            let a: IpAddr = str_of(&p["addr"]).parse().map_err(|_| bad())?;
            Ok(vec![IpNet::new(a, p["len"].as_u64().unwrap_or(0) as u8)
                .map_err(|_| bad())?
                .trunc()])
        }
        Value::Object(o) if o.contains_key("set") => {
            let mut out = Vec::new();
            for e in o["set"].as_array().into_iter().flatten() {
                out.extend(nets_of(e, sets)?);
            }
            Ok(out)
        }
        Value::Object(o) if o.contains_key("elem") => nets_of(&o["elem"]["val"], sets),
        _ => Err(bad()),
    }
}
