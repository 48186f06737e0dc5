//! The `.env` file syntax `env import` reads: `KEY=VALUE` lines, `#` comments and blank lines,
//! an optional `export ` prefix, values bare (trimmed, ` #...` ends them), in single quotes
//! (literal) or in double quotes (`\n`, `\t`, `\"`, `\\`, `\$` escapes). One line per variable;
//! a bad line is an error naming its number, and nothing is imported.

use anyhow::{bail, Result};

/// Parses a `.env` text into (key, value) pairs in file order; keys are not checked here.
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            bail!("line {n}: expected KEY=VALUE");
        };
        let key = key.trim_end();
        let value = value(rest.trim_start()).map_err(|e| anyhow::anyhow!("line {n} ({key}): {e}"))?;
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn value(rest: &str) -> Result<String> {
    let mut chars = rest.chars();
    let (v, tail) = match chars.next() {
        Some('\'') => {
            let Some(end) = rest[1..].find('\'') else {
                bail!("the single quote is not closed (values span one line)");
            };
            (rest[1..1 + end].to_string(), &rest[2 + end..])
        }
        Some('"') => {
            let mut v = String::new();
            let mut end = None;
            let mut it = rest.char_indices().skip(1);
            while let Some((i, c)) = it.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match it.next().map(|(_, e)| e) {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(e @ ('"' | '\\' | '$' | '\'')) => v.push(e),
                        Some(e) => {
                            v.push('\\');
                            v.push(e);
                        }
                        None => bail!("the double quote is not closed (values span one line)"),
                    },
                    c => v.push(c),
                }
            }
            let Some(end) = end else {
                bail!("the double quote is not closed (values span one line)");
            };
            (v, &rest[end..])
        }
        _ => {
            let bare = match rest.find(" #") {
                Some(i) => &rest[..i],
                None => rest,
            };
            return Ok(bare.trim_end().to_string());
        }
    };
    let tail = tail.trim_start();
    if !(tail.is_empty() || tail.starts_with('#')) {
        bail!("unexpected text after the closing quote");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_forms() {
        let text = "\
# a comment

A=1
export B = two words # note
C='single $x \"q\" # not a comment'
D=\"line\\nnext \\\"q\\\" \\$x\" # note
E=
F=a=b#c
  G='' 
";
        let got = parse(text).unwrap();
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "single $x \"q\" # not a comment"),
            ("D", "line\nnext \"q\" $x"),
            ("E", ""),
            ("F", "a=b#c"),
            ("G", ""),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, line) in [
            ("A=1\nnot a pair\n", "line 2"),
            ("A='open\n", "line 1"),
            ("\n\nB=\"open\n", "line 3"),
            ("A='x' y\n", "line 1"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(line), "{text:?}: {e}");
        }
    }
}
