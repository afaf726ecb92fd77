//! From files as users keep them to the commands in them: shell scripts,
//! `/etc/network/interfaces` (`post-up` lines), systemd units (`ExecStart=`).
//!
//! The fact a reader would get wrong: this is not a shell. It splits words
//! the way sh does (quotes, escapes, `;`, `&&`, `|`, `&`, redirections),
//! substitutes variables assigned plainly in the same file, and reports
//! everything it cannot follow (command substitution, arguments, loops,
//! functions) instead of guessing. A whole-program shell parser would fail
//! on the non-shell files read here line by line (interfaces, units) and
//! still leave the same "what is this command" walk to write, so the word
//! splitting is hand-written; shlex alone has no operators or variables.

use std::{collections::HashMap, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use super::{
    ir::Origin,
    words::{assignment, logical_lines, split_commands, tokenize, Tok, Vars},
    Entry,
};

/// A command line found in the input, with its program first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub origin: Origin,
    pub words: Vec<String>,
    /// The unit (file name without `.service`) or script it came from, for
    /// forward names.
    pub label: Option<String>,
    /// A unit's `Description=`.
    pub description: Option<String>,
}

impl Command {
    /// The program's base name: `/sbin/iptables` is `iptables`.
    pub fn program(&self) -> &str {
        let p = self.words.first().map_or("", String::as_str);
        p.rsplit('/').next().unwrap_or(p)
    }
}

/// What the input layer learned from one file.
#[derive(Debug, Default)]
pub struct Script {
    pub commands: Vec<Command>,
    pub entries: Vec<Entry>,
    /// Interface networks from `iface X inet static` + `address` stanzas.
    pub iface_nets: Vec<(String, IpNet)>,
}

/// Program names whose commands the importers translate.
pub const FIREWALL_PROGRAMS: [&str; 4] = ["iptables", "ip6tables", "socat", "ufw"];

pub fn is_importable(program: &str) -> bool {
    FIREWALL_PROGRAMS
        .iter()
        .any(|p| program == *p || program.starts_with(&format!("{p}-")))
        && !program.ends_with("-save")
        && !program.ends_with("-restore")
        || program == "nft"
}

/// Reads a script or an `/etc/network/interfaces` file.
pub fn read_script(source: &str, text: &str) -> Script {
    let mut s = Script::default();
    let interfaces = text.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("iface ") || t.starts_with("auto ")
    });
    let mut vars = Vars::new();
    let mut current_iface: Option<String> = None;
    let mut heredoc: Option<(String, usize)> = None;
    let mut block: Vec<(String, usize)> = Vec::new();
    // Forwards of a script are named after their interface and port.
    let label: Option<String> = None;
    for (line, raw) in logical_lines(text) {
        let origin = Origin::new(source, line, &raw);
        let t = raw.trim();
        if let Some((delim, start)) = &heredoc {
            if t == delim {
                heredoc = None;
            } else if raw.contains("iptables") || raw.contains("socat") || raw.contains("ExecStart")
            {
                let at = Origin::new(source, *start, "");
                s.entries.push(Entry::left(
                    origin,
                    format!("inside a here-document opened at {}: its text is written somewhere else; import the file it writes", at.at()),
                ));
            }
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut body = t;
        if interfaces {
            let (key, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            let rest = rest.trim();
            match key {
                "iface" => {
                    current_iface = rest.split_whitespace().next().map(str::to_owned);
                    continue;
                }
                "address" => {
                    let net = IpNet::from_str(rest)
                        .ok()
                        .or_else(|| IpAddr::from_str(rest).ok().map(IpNet::from));
                    if let (Some(i), Some(net)) = (&current_iface, net) {
                        s.iface_nets.push((i.clone(), net));
                    }
                    continue;
                }
                "netmask" => {
                    if let (Some((i, net)), Ok(mask)) =
                        (s.iface_nets.last_mut(), IpAddr::from_str(rest))
                    {
                        if Some(&*i) == current_iface.as_ref() {
                            if let Ok(len) = ipnet::ip_mask_to_prefix(mask) {
                                *net = IpNet::new(net.addr(), len)
                                    .map(|n| n.trunc())
                                    .unwrap_or(*net);
                            }
                        }
                    }
                    continue;
                }
                "post-up" | "up" | "pre-up" => body = rest,
                "post-down" | "down" | "pre-down" => {
                    s.entries.push(Entry::note(
                        origin,
                        format!("`{key}` runs when the interface goes down: a removal, nothing to translate"),
                    ));
                    continue;
                }
                k if k.contains('-')
                    || k.contains('_')
                    || matches!(
                        k,
                        "auto"
                            | "gateway"
                            | "mtu"
                            | "source"
                            | "allow-hotplug"
                            | "hwaddress"
                            | "metric"
                    ) =>
                {
                    if matches!(k, "source" | "source-directory") {
                        s.entries.push(Entry::note(
                            origin,
                            "included files are not read: import them too".into(),
                        ));
                    }
                    continue;
                }
                _ => {}
            }
        }
        // Loops and functions: their commands run zero or more times with
        // values the file does not say.
        let raw_words: Vec<&str> = body.split_whitespace().collect();
        let first = raw_words.first().copied().unwrap_or("");
        match first {
            "for" | "while" | "until" | "select" | "case" => block.push((first.to_owned(), line)),
            "function" => block.push(("function".into(), line)),
            f if f.ends_with("()") || raw_words.get(1) == Some(&"()") => {
                block.push(("function".into(), line))
            }
            _ => {}
        }
        if let Some((kind, start)) = block.last() {
            let ends = raw_words
                .iter()
                .any(|w| matches!(w.trim_end_matches(';'), "done" | "esac" | "}"));
            if is_importable_line(body) {
                s.entries.push(Entry::left(
                    origin.clone(),
                    format!("inside a `{kind}` block (line {start}): loops, cases and functions are not followed; write the commands out"),
                ));
            }
            if ends {
                block.pop();
            }
            continue;
        }
        let tokens = match tokenize(body, &vars) {
            Ok(t) => t,
            Err(reason) => {
                if let Some((name, _)) = raw_words.first().and_then(|w| assignment(w)) {
                    // Uses of the variable say where its value came from.
                    vars.insert(
                        name.to_owned(),
                        Err(format!(
                            "${name} is computed when the script runs (line {line}: {reason})"
                        )),
                    );
                    continue;
                }
                if is_importable_line(body) {
                    s.entries.push(Entry::left(origin, reason));
                } else {
                    s.entries.push(Entry::note(
                        origin,
                        format!("not followed ({reason}); no firewall or socat command in it"),
                    ));
                }
                continue;
            }
        };
        for cmd in split_commands(&tokens) {
            if let Some(h) = cmd.iter().find_map(|t| match t {
                Tok::Heredoc(d) => Some(d.clone()),
                _ => None,
            }) {
                heredoc = Some((h, line));
            }
            let words: Vec<String> = cmd
                .into_iter()
                .filter_map(|t| match t {
                    Tok::Word(w) => Some(w),
                    _ => None,
                })
                .collect();
            simple_command(words, &origin, &mut vars, &label, None, &mut s, 0);
        }
    }
    s
}

/// Whether a line mentions a command the importers translate.
pub(crate) fn is_importable_line(line: &str) -> bool {
    line.split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '\'' | '"' | '/' | '('))
        .any(is_importable)
}

/// One simple command: assignments, wrappers (`sudo`, `exec`, `nohup`,
/// `sh -c`...) and shell keywords peeled off, then recorded.
pub(crate) fn simple_command(
    mut words: Vec<String>,
    origin: &Origin,
    vars: &mut HashMap<String, Result<String, String>>,
    label: &Option<String>,
    description: Option<&str>,
    s: &mut Script,
    depth: usize,
) {
    // Shell keywords that only frame a command.
    while words.first().is_some_and(|w| {
        matches!(
            w.as_str(),
            "if" | "then" | "elif" | "else" | "!" | "do" | "{" | "time"
        )
    }) {
        words.remove(0);
    }
    if words.first().is_some_and(|w| {
        matches!(
            w.as_str(),
            "fi" | "done" | "}" | "esac" | "true" | ":" | "set" | "exit"
        )
    }) {
        return;
    }
    // Plain assignments: NAME=value alone sets a variable for the rest of
    // the file; before a command it only sets the command's environment.
    let n_assign = words.iter().take_while(|w| assignment(w).is_some()).count();
    if n_assign == words.len() {
        for w in &words {
            if let Some((name, value)) = assignment(w) {
                vars.insert(name.to_owned(), Ok(value.to_owned()));
            }
        }
        return;
    }
    words.drain(..n_assign);
    if matches!(
        words[0].as_str(),
        "export" | "readonly" | "local" | "declare" | "typeset"
    ) {
        for w in &words[1..] {
            if let Some((name, value)) = assignment(w) {
                vars.insert(name.to_owned(), Ok(value.to_owned()));
            }
        }
        return;
    }
    // Wrappers and their options.
    loop {
        let p = words[0].rsplit('/').next().unwrap_or("").to_owned();
        let with_value: &[&str] = match p.as_str() {
            "sudo" => &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"],
            "exec" => &["-a"],
            "nice" => &["-n"],
            "ionice" => &["-c", "-n", "-p"],
            "timeout" => &["-s", "-k"],
            "env" => &["-u", "-C", "-S"],
            "stdbuf" | "setsid" | "nohup" | "command" | "builtin" | "chronic" => &[],
            _ => break,
        };
        words.remove(0);
        while let Some(w) = words.first() {
            if w == "--" {
                words.remove(0);
                break;
            }
            if w.starts_with('-') && w.len() > 1 {
                let takes = with_value.contains(&w.as_str());
                words.remove(0);
                if takes && !words.is_empty() {
                    words.remove(0);
                }
            } else if p == "env" && assignment(w).is_some()
                || p == "timeout" && w.chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                words.remove(0);
            } else {
                break;
            }
        }
        if words.is_empty() {
            return;
        }
    }
    let program = words[0].rsplit('/').next().unwrap_or("").to_owned();
    if matches!(
        program.as_str(),
        "sh" | "bash" | "dash" | "zsh" | "ash" | "busybox"
    ) {
        if let Some(i) = words.iter().position(|w| {
            w == "-c" || (w.starts_with('-') && w.ends_with('c') && !w.starts_with("--"))
        }) {
            if let Some(inner) = words.get(i + 1) {
                if depth > 4 {
                    return;
                }
                match tokenize(inner, vars) {
                    Ok(tokens) => {
                        for cmd in split_commands(&tokens) {
                            let ws = cmd
                                .into_iter()
                                .filter_map(|t| match t {
                                    Tok::Word(w) => Some(w),
                                    _ => None,
                                })
                                .collect();
                            simple_command(ws, origin, vars, label, description, s, depth + 1);
                        }
                    }
                    Err(reason) => s.entries.push(Entry::left(origin.clone(), reason)),
                }
                return;
            }
        }
        s.entries.push(Entry::note(
            origin.clone(),
            format!(
                "runs a script ({}): import that script too",
                words[1..].join(" ")
            ),
        ));
        return;
    }
    if is_importable(&program) {
        s.commands.push(Command {
            origin: origin.clone(),
            words,
            label: label.clone(),
            description: description.map(str::to_owned),
        });
    } else if program.ends_with("-restore")
        && (program.starts_with("iptables") || program.starts_with("ip6tables"))
    {
        s.entries.push(Entry::left(
            origin.clone(),
            format!("{program} loads rules from a file or standard input: import that file (it is iptables-save output)"),
        ));
    } else {
        s.entries.push(Entry::note(
            origin.clone(),
            format!("`{program}`: not a firewall or socat command, nothing to translate"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &Script) -> Vec<String> {
        s.commands.iter().map(|c| c.words.join(" ")).collect()
    }

    #[test]
    fn wrappers_variables_and_operators() {
        let text = "#!/bin/sh\nWAN=eth0\nIPT=/sbin/iptables\nexport PORT=8080\n\
            sudo $IPT -t nat -A PREROUTING -i \"$WAN\" -p tcp --dport ${PORT} -j DNAT --to 10.0.0.2 || true\n\
            nohup socat TCP-LISTEN:1,fork TCP:10.0.0.3:1 >/dev/null 2>&1 &\n\
            sh -c 'exec socat TCP-LISTEN:2,fork TCP:10.0.0.3:2'\n\
            echo 1 > /proc/sys/net/ipv4/ip_forward\n\
            exec /sbin/iptables \\\n  -t nat -A PREROUTING -i $WAN -p udp --dport 53 -j DNAT --to 10.0.0.4\n";
        let s = read_script("fw.sh", text);
        assert_eq!(
            words(&s),
            vec![
                "/sbin/iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to 10.0.0.2",
                "socat TCP-LISTEN:1,fork TCP:10.0.0.3:1",
                "socat TCP-LISTEN:2,fork TCP:10.0.0.3:2",
                "/sbin/iptables -t nat -A PREROUTING -i eth0 -p udp --dport 53 -j DNAT --to 10.0.0.4",
            ]
        );
        assert_eq!(s.commands[3].origin.line, 9);
    }

    #[test]
    fn unknown_values_are_reported() {
        let s = read_script("x.sh", "iptables -A PREROUTING -i $1 -j ACCEPT\nIP=$(hostname -I)\nsocat TCP-LISTEN:1 TCP:$IP:1\nfor p in 1 2; do\n iptables -A X --dport $p\ndone\n");
        assert!(s.commands.is_empty(), "{:?}", s.commands);
        let reasons: Vec<_> = s
            .entries
            .iter()
            .map(|e| (e.origin.line, e.reason.as_str()))
            .collect();
        assert!(
            reasons[0].1.contains("$1 is set when the script runs"),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|(l, r)| *l == 3 && r.contains("$IP")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|(l, r)| *l == 5 && r.contains("inside a `for` block (line 4)")),
            "{reasons:?}"
        );
    }

    #[test]
    fn interfaces_file() {
        let text = "auto vmbr1\niface vmbr1 inet static\n\taddress 10.10.10.1\n\tnetmask 255.255.255.0\n\tpost-up iptables -t nat -A POSTROUTING -s '10.10.10.0/24' -o vmbr0 -j MASQUERADE\n\tpost-down iptables -t nat -D POSTROUTING -s '10.10.10.0/24' -o vmbr0 -j MASQUERADE\n";
        let s = read_script("interfaces", text);
        assert_eq!(
            s.iface_nets,
            vec![("vmbr1".to_string(), "10.10.10.0/24".parse().unwrap())]
        );
        assert_eq!(
            words(&s),
            vec!["iptables -t nat -A POSTROUTING -s 10.10.10.0/24 -o vmbr0 -j MASQUERADE"]
        );
        assert!(s.entries[0].reason.contains("removal"));
    }
}
