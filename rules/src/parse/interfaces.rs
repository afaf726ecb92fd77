//! `[interface.NAME]` sections: how the forwarder attaches to one
//! interface. The name is checked like `in` of a forward; an interface
//! named here need not exist yet.

use toml_edit::TableLike;

use super::{
    items::{bad_keyword, entries, expect_str, type_error, unknown_key},
    names::valid_iface,
    Parsed,
};
use crate::{diagnostics::Sink, model::*};

const INTERFACE_KEYS: [&str; 1] = ["attach"];

/// `[interface.NAME]` sections.
pub(super) fn parse_interfaces(t: &dyn TableLike, sink: &mut Sink, parsed: &mut Parsed) {
    for (name, name_span, item) in entries(t) {
        let ctx_owned = format!("interface {name}");
        let ctx = Some(ctx_owned.as_str());
        if let Err(why) = valid_iface(name) {
            sink.error(
                &name_span,
                ctx,
                why,
                Some("use the name `ip link` shows".into()),
            );
            continue;
        }
        let Some(tbl) = item.as_table_like() else {
            type_error(
                sink,
                &item.span(),
                ctx,
                name,
                item,
                "a table",
                Some("e.g. [interface.eth0] with attach = \"xdp\""),
            );
            continue;
        };
        let mut settings = IfaceSettings::default();
        for (key, key_span, item) in entries(tbl) {
            let span = item.span();
            match key {
                "attach" => {
                    if let Some(s) = expect_str(
                        sink,
                        ctx,
                        key,
                        item,
                        "attach = \"auto\", \"tc\", \"xdp\" or \"tc-legacy\"",
                    ) {
                        match s {
                            "auto" => settings.attach = AttachMode::Auto,
                            "tc" => settings.attach = AttachMode::Tc,
                            "xdp" => settings.attach = AttachMode::Xdp,
                            "tc-legacy" => settings.attach = AttachMode::TcLegacy,
                            _ => bad_keyword(
                                sink,
                                &span,
                                ctx,
                                key,
                                s,
                                &["auto", "tc", "xdp", "tc-legacy"],
                            ),
                        }
                    }
                }
                _ => unknown_key(
                    sink,
                    &key_span,
                    ctx,
                    key,
                    &INTERFACE_KEYS,
                    "[interface.NAME]",
                ),
            }
        }
        parsed.rules.interfaces.insert(name.to_string(), settings);
    }
}
