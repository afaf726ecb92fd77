//! systemd units: every `ExecStart=` (and `ExecStartPre/Post=`) is a
//! command, `Environment=` sets variables, `%i` comes from the instance
//! name in the file name (`name@8080.service`) or is reported.

use super::{
    ir::Origin,
    shell::{is_importable_line, simple_command, Script},
    words::{assignment, logical_lines, tokenize, Tok, Vars},
    Entry,
};

/// Reads a systemd unit: every `ExecStart=` (and `ExecStartPre/Post=`) is a
/// command; `Environment=` sets variables; `%i` needs an instance name,
/// taken from the file name (`name@8080.service`) or reported.
pub fn read_unit(source: &str, text: &str) -> Script {
    let mut s = Script::default();
    let file = source.rsplit('/').next().unwrap_or(source);
    let stem = file.strip_suffix(".service").unwrap_or(file);
    let (unit, instance) = match stem.split_once('@') {
        Some((u, i)) => (u.to_owned(), (!i.is_empty()).then(|| i.to_owned())),
        None => (stem.to_owned(), None),
    };
    let label = Some(match &instance {
        Some(i) => format!("{unit}-{i}"),
        None => unit.clone(),
    });
    let mut vars = Vars::new();
    let mut env_file = None;
    let mut description = None;
    let lines = logical_lines(text);
    for (_, l) in &lines {
        if let Some(d) = l.trim().strip_prefix("Description=") {
            description = Some(d.trim().to_owned());
        }
    }
    for (line, raw) in lines {
        let origin = Origin::new(source, line, &raw);
        let t = raw.trim();
        let Some((key, value)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        match key {
            "Environment" => {
                if let Ok(tokens) = tokenize(value, &Vars::new()) {
                    for tok in tokens {
                        if let Tok::Word(w) = tok {
                            if let Some((n, v)) = assignment(&w) {
                                vars.insert(n.to_owned(), Ok(v.to_owned()));
                            }
                        }
                    }
                }
            }
            "EnvironmentFile" => env_file = Some(value.trim_start_matches('-').to_owned()),
            "ExecStart" | "ExecStartPre" | "ExecStartPost" => {
                let cmd = value.trim_start_matches(['-', '@', ':', '+', '!', '|']);
                let cmd = match specifiers(cmd, instance.as_deref(), &unit) {
                    Ok(c) => c,
                    Err(reason) => {
                        let entry = if is_importable_line(cmd) {
                            Entry::left
                        } else {
                            Entry::note
                        };
                        s.entries.push(entry(origin, reason));
                        continue;
                    }
                };
                // systemd expands $NAME and ${NAME} from Environment=; a
                // variable only an EnvironmentFile= sets is unknown here.
                let mut v = vars.clone();
                if let Some(f) = &env_file {
                    for w in cmd.split(['$', '{', '}', ' ', ',', ':']) {
                        if !w.is_empty() && !v.contains_key(w) {
                            v.insert(w.to_owned(), Err(format!("${w} would come from EnvironmentFile={f}, which is not read: write the value into the command")));
                        }
                    }
                }
                match tokenize(&cmd, &v) {
                    Ok(tokens) => {
                        let words = tokens
                            .into_iter()
                            .filter_map(|t| match t {
                                Tok::Word(w) => Some(w),
                                _ => None,
                            })
                            .collect::<Vec<_>>();
                        if !words.is_empty() {
                            simple_command(
                                words,
                                &origin,
                                &mut v,
                                &label,
                                description.as_deref(),
                                &mut s,
                                0,
                            );
                        }
                    }
                    Err(reason) => s.entries.push(Entry::left(origin, reason)),
                }
            }
            "ExecStop" | "ExecStopPost" | "ExecReload" if is_importable_line(value) => {
                s.entries.push(Entry::note(
                    origin,
                    format!("`{key}` undoes or reloads what ExecStart did: nothing to translate"),
                ));
            }
            _ => {}
        }
    }
    s
}

/// systemd `%` specifiers: `%i`/`%I` from the instance name, `%%`, `%n`,
/// `%N`, `%p`; any other is reported.
fn specifiers(cmd: &str, instance: Option<&str>, unit: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('i' | 'I') => match instance {
                Some(i) => out.push_str(i),
                None => {
                    return Err(format!(
                        "template unit: %i is the instance name, which this file does not have; import an instance (save the unit as {unit}@VALUE.service) or write the forward by hand"
                    ))
                }
            },
            Some('p' | 'P') => out.push_str(unit),
            Some('n' | 'N') => out.push_str(unit),
            Some(other) => return Err(format!("systemd specifier %{other} is not known offline: write its value into the command")),
            None => out.push('%'),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &Script) -> Vec<String> {
        s.commands.iter().map(|c| c.words.join(" ")).collect()
    }

    #[test]
    fn unit_templates() {
        let unit = "[Service]\nEnvironment=PORT=8080 \"T=10.0.0.1\"\nExecStart=/usr/bin/socat TCP4-LISTEN:%i,fork TCP4:${T}:$PORT\n";
        let s = read_unit("fwd@9000.service", unit);
        assert_eq!(
            words(&s),
            vec!["/usr/bin/socat TCP4-LISTEN:9000,fork TCP4:10.0.0.1:8080"]
        );
        assert_eq!(s.commands[0].label.as_deref(), Some("fwd-9000"));
        let s = read_unit("fwd@.service", unit);
        assert!(s.commands.is_empty());
        assert!(s.entries[0].reason.starts_with("template unit"));
    }
}
