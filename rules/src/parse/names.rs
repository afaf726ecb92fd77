//! The names a rules file gives: forward names (CLI arguments and metrics
//! label values) and Linux interface names (`in`, `[interface.NAME]`).

/// Names are CLI arguments and metrics label values: keep them plain.
pub(crate) fn valid_name(s: &str) -> Result<(), String> {
    const HELP: &str =
        "use 1 to 63 characters out of a-z, 0-9, `-` and `_`, starting with a letter or digit";
    if s.is_empty() || s.len() > 63 {
        return Err(HELP.into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        let lower = s.to_ascii_lowercase();
        if lower != s && valid_name(&lower).is_ok() {
            return Err(format!("names are lowercase: write \"{lower}\""));
        }
        return Err(HELP.into());
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(HELP.into());
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, no
/// whitespace, not `.` or `..`.
pub(crate) fn valid_iface(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("`in` is empty: name the interface packets arrive on".into());
    }
    if s.len() > 15 {
        return Err(format!("interface name `{s}` is longer than 15 bytes"));
    }
    if s == "."
        || s == ".."
        || s.contains('/')
        || s.contains(':')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("`{s}` is not a valid interface name"));
    }
    Ok(())
}
