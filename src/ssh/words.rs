//! POSIX-shell quoting, parsed strictly and without a shell: a command line becomes argv.
//!
//! Accepted: words separated by spaces; `'...'` (everything literal); `"..."` where `\"`, `\\`,
//! `\$` and `` \` `` are escapes and any other backslash is literal; `\X` outside quotes (X
//! literal). Refused, with a one-line error: an unquoted character that would mean something
//! to a shell (`; | & $ ` > < ( ) { } * ? [ ] ! ~`, and `#` at the start of a word), `$` or
//! a backtick inside double quotes (nothing is expanded here, so passing them on would
//! surprise), unterminated quotes, a trailing backslash, and non-ASCII outside quotes (a
//! look-alike verb or app name must never pass). Control characters are refused by the
//! caller before this runs.

use anyhow::{bail, Result};

/// Unquoted characters that a shell would interpret; they must be quoted to be sent.
const META: &[char] = &[
    ';', '|', '&', '$', '`', '>', '<', '(', ')', '{', '}', '*', '?', '[', ']', '!', '~',
];

/// Splits `line` into words, undoing POSIX quoting; an error says what was refused.
pub fn split(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started (so `''` is an empty argument, not nothing).
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\'' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(q) => word.push(q),
                        None => bail!("command refused: a single quote (') is not closed"),
                    }
                }
            }
            '"' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => bail!("command refused: a double quote (\") is not closed"),
                        },
                        Some(x @ ('$' | '`')) => bail!(
                            "command refused: '{x}' inside double quotes is not expanded here; use single quotes, or write \\{x}"
                        ),
                        Some(q) => word.push(q),
                        None => bail!("command refused: a double quote (\") is not closed"),
                    }
                }
            }
            '\\' => {
                started = true;
                match chars.next() {
                    Some(e) if e.is_ascii() => word.push(e),
                    Some(_) => bail!("command refused: only printable ASCII is accepted outside quotes"),
                    None => bail!("command refused: the command ends with a backslash"),
                }
            }
            '#' if !started => {
                bail!("command refused: '#' starts a comment in a shell; quote the argument ('#...') to send it")
            }
            c if META.contains(&c) => bail!(
                "command refused: the character '{c}' means something to a shell; quote the argument ('...') to send it literally"
            ),
            c if !c.is_ascii() => bail!("command refused: only printable ASCII is accepted outside quotes"),
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

/// Quotes `word` so that [`split`] gives it back unchanged: bare when it is plainly safe,
/// otherwise in single quotes (a `'` inside becomes `'\''`), the way a client's shell quotes.
/// The canonical quoter of the round-trip property tests.
#[cfg(test)]
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Quotes every word of `argv` and joins them with spaces (a command line for [`split`]).
#[cfg(test)]
pub fn join(argv: &[String]) -> String {
    argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| panic!("{line:?} refused: {e}"))
    }

    #[test]
    fn quoting_forms() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("a  b ", &["a", "b"]),
            (
                "env set APP 'K=any value ?!#$'",
                &["env", "set", "APP", "K=any value ?!#$"],
            ),
            ("env set APP \"MSG=two words\"", &["env", "set", "APP", "MSG=two words"]),
            (
                "run APP python3 -c 'print(1)'",
                &["run", "APP", "python3", "-c", "print(1)"],
            ),
            ("''", &[""]),
            ("a '' b", &["a", "", "b"]),
            ("\"\"", &[""]),
            ("'it'\\''s'", &["it's"]),
            ("\"a\\\"b\\\\c\\$d\\`e\\nf\"", &["a\"b\\c$d`e\\nf"]),
            ("a\\ b", &["a b"]),
            ("a\\;b", &["a;b"]),
            ("K=a#b", &["K=a#b"]),
            ("'#x'", &["#x"]),
            ("'é ü'", &["é ü"]),
            ("\"ü\"", &["ü"]),
            ("pre'mid'\"post\"", &["premidpost"]),
            ("../x", &["../x"]),
        ];
        for (line, want) in table {
            assert_eq!(ok(line), want.to_vec(), "{line:?}");
        }
    }

    #[test]
    fn refusals_are_one_clear_line() {
        for line in [
            "a;b",
            "a | b",
            "a&",
            "$HOME",
            "a$b",
            "`id`",
            "a>b",
            "<x",
            "(x)",
            "{a,b}",
            "*",
            "a?",
            "[a]",
            "!x",
            "~root",
            "a=~",
            "#x",
            "'open",
            "\"open",
            "\"a$b\"",
            "\"`id`\"",
            "\"${x}\"",
            "trail\\",
            "\"x\\",
            "\u{430}pp",
            "ap\u{440}",
            "a\\\u{e9}",
        ] {
            let e = split(line).expect_err(line).to_string();
            assert!(e.starts_with("command refused: "), "{line:?}: {e}");
            assert!(!e.contains('\n'), "{line:?}: {e}");
        }
        assert!(split("\"a$b\"").unwrap_err().to_string().contains("single quotes"));
        assert!(split("a?").unwrap_err().to_string().contains("'?'"));
    }

    #[test]
    fn quote_is_minimal_and_safe() {
        assert_eq!(quote("shop"), "shop");
        assert_eq!(quote("K=v"), "K=v");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("~x"), "'~x'");
        assert_eq!(quote("#x"), "'#x'");
    }

    /// xorshift64*: a fixed-seed generator, so a failure is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Characters a generated string draws from: shell metacharacters, quotes, backslashes,
    /// spaces, letters, non-ASCII, and (for the no-panic half) control characters.
    const ALPHABET: &[char] = &[
        'a', 'Z', '0', '_', '-', '=', '.', '/', ':', ',', '@', '%', '+', ' ', ' ', '\'', '\'', '"', '"', '\\', '\\',
        '$', '`', ';', '|', '&', '>', '<', '(', ')', '{', '}', '*', '?', '[', ']', '!', '~', '#', '^', 'é', 'ü',
        '\u{200b}', '\u{43e}', '\t', '\n', '\0',
    ];

    fn word(r: &mut Rng, printable: bool) -> String {
        let len = r.below(12);
        (0..len)
            .map(|_| loop {
                let c = ALPHABET[r.below(ALPHABET.len())];
                if !printable || !c.is_control() {
                    break c;
                }
            })
            .collect()
    }

    #[test]
    fn property_random_lines_never_panic() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let line: String = (0..r.below(6))
                .map(|_| word(&mut r, false))
                .collect::<Vec<_>>()
                .join(" ");
            // Accept or refuse, never panic; whatever is accepted quotes back to itself.
            if let Ok(argv) = split(&line) {
                assert_eq!(split(&join(&argv)).unwrap(), argv, "{line:?}");
            }
        }
    }

    #[test]
    fn property_quoted_argv_round_trips() {
        let mut r = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..20_000 {
            let argv: Vec<String> = (0..1 + r.below(6)).map(|_| word(&mut r, true)).collect();
            let line = join(&argv);
            assert_eq!(
                split(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")),
                argv,
                "{line:?}"
            );
        }
    }
}
