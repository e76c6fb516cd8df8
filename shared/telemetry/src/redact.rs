//! Keeps secrets out of text meant to be read: log lines, and the command
//! lines the test kit records.
//!
//! Three pure functions, each cheap when there is nothing to hide (they then
//! return the text they were given, borrowed):
//!
//! - [`is_secret_name`]: whether a field, variable or key name names a
//!   secret (`JWT_HS256_SECRET`, `db_password`, `x-api-key`);
//! - [`redact_url_credentials`]: `postgres://user:pw@host` becomes
//!   `postgres://user:***@host` wherever a URL appears in the text;
//! - [`redact_pairs`]: `NAME=value`, `NAME="value"` and `"NAME": "value"`
//!   lose their value when `NAME` names a secret.
//!
//! [`redact`] applies both text redactions; [`escape_control_chars`] makes
//! any text safe to put on one line.
//!
//! This is a safety net, not a parser: it works on the usual shapes in which
//! secrets leak (an environment listing, a connection string, a JSON body, a
//! `Debug`-printed struct) and prefers hiding a little too much to showing a
//! secret.

use std::borrow::Cow;

/// What a hidden value is replaced with.
pub const REDACTED: &str = "***";

/// Words that make a name a secret's, in lowercase and with `_` standing
/// for `-` too (names are compared that way).
const SECRET_WORDS: [&str; 9] = [
    "secret",
    "password",
    "passwd",
    "token",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    // The HTTP header that carries bearer tokens.
    "authorization",
];

/// Whether `name` (a log field, an environment variable, a JSON key) names
/// a secret: it contains, ignoring case and with `-` read as `_`, one of
/// `secret`, `password`, `passwd`, `token`, `api_key`, `apikey`,
/// `credential`, `private_key` or `authorization`.
///
/// Containment rather than equality, so `JWT_HS256_SECRET` and
/// `--db-password` are caught without a list of every name; a harmless name
/// that happens to contain a word (`token_count`) is hidden too.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.as_bytes();
    SECRET_WORDS.iter().any(|word| {
        name.windows(word.len()).any(|window| {
            window
                .iter()
                .zip(word.bytes())
                .all(|(&have, want)| normalized(have) == want)
        })
    })
}

/// A name's byte as [`SECRET_WORDS`] spell it.
fn normalized(byte: u8) -> u8 {
    if byte == b'-' {
        b'_'
    } else {
        byte.to_ascii_lowercase()
    }
}

/// `text` with the credentials of every URL in it hidden: the password of
/// `scheme://user:password@host` (the user name stays, it says which
/// account was used), or the whole user part of `scheme://token@host`,
/// which is usually a token.
///
/// A URL's user part ends at the last `@` before the host's end (`/`, `?`,
/// `#`, whitespace or a quote), as RFC 3986 reads it; an `@` in a path or a
/// query (`/users/@me`) is left alone.
pub fn redact_url_credentials(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // How much of `text` is already in `out`.
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let authority_start = from + found + "://".len();
        let authority_end = text[authority_start..]
            .find(ends_authority)
            .map_or(text.len(), |len| authority_start + len);
        let authority = &text[authority_start..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            let hidden_from = userinfo.find(':').map_or(0, |colon| colon + 1);
            let hidden = &userinfo[hidden_from..];
            if !hidden.is_empty() && hidden != REDACTED {
                out.push_str(&text[copied..authority_start + hidden_from]);
                out.push_str(REDACTED);
                copied = authority_start + at;
            }
        }
        from = authority_end;
    }
    finish(text, out, copied)
}

/// Whether `c` ends a URL's authority (`user:password@host:port`).
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '\\' | '<' | '>')
        || c.is_whitespace()
        || c.is_control()
}

/// `text` with the value of every `NAME=value`, `NAME="value"`,
/// `NAME: "value"` and `"NAME": "value"` pair hidden when `NAME` is a
/// secret's name ([`is_secret_name`]): an environment listing, command-line
/// flags (`--password=x`), a URL query (`?api_key=x`), a JSON body, a
/// `Debug`-printed struct.
///
/// A quoted value ends at its closing quote (`\"` does not close it); a bare
/// one at whitespace or one of `,;&"'\)]}<>`. A colon followed by a bare
/// word is prose ("invalid token: expired"), not a pair, and is left alone.
pub fn redact_pairs(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if !is_name_byte(bytes[at]) {
            at += 1;
            continue;
        }
        let name_start = at;
        while at < bytes.len() && is_name_byte(bytes[at]) {
            at += 1;
        }
        // Only a secret's value is looked for: scanning every name's value
        // would rescan `a=a=a=...` to its end once per name, quadratic in
        // text any caller can put in a logged path.
        if !is_secret_name(&text[name_start..at]) {
            continue;
        }
        let Some((start, end)) = value_after(bytes, name_start, at) else {
            continue;
        };
        let value = &text[start..end];
        if !value.is_empty() && value != REDACTED {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            at = end;
        }
    }
    finish(text, out, copied)
}

/// Whether `byte` can be part of a name in [`redact_pairs`].
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

/// Where the value of the pair whose name is `bytes[name_start..name_end]`
/// lies (inside its quotes, if quoted), if a pair it is.
///
/// Every index returned is that of an ASCII byte or the end of `bytes`, so
/// the text can be sliced there.
fn value_after(bytes: &[u8], name_start: usize, name_end: usize) -> Option<(usize, usize)> {
    let mut at = name_end;
    // `"NAME": ...`: step over the quote that closes the name.
    if name_start > 0 && bytes[name_start - 1] == b'"' && bytes.get(at) == Some(&b'"') {
        at += 1;
    }
    at = skip_spaces(bytes, at);
    let separator = *bytes.get(at)?;
    if separator != b'=' && separator != b':' {
        return None;
    }
    at = skip_spaces(bytes, at + 1);
    match bytes.get(at) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = at + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end] != quote {
                // A backslash escapes the next byte (and a quote there).
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            Some((start, end.min(bytes.len())))
        }
        _ if separator == b':' => None,
        _ => {
            let len = bytes[at..]
                .iter()
                .position(|&byte| ends_bare_value(byte))
                .unwrap_or(bytes.len() - at);
            Some((at, at + len))
        }
    }
}

/// The index of the first byte from `at` on that is not a space.
fn skip_spaces(bytes: &[u8], at: usize) -> usize {
    bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&byte| byte != b' '))
        .map_or(bytes.len(), |len| at + len)
}

/// Whether `byte` ends an unquoted value in [`redact_pairs`].
fn ends_bare_value(byte: u8) -> bool {
    byte.is_ascii_whitespace()
        || byte.is_ascii_control()
        || matches!(
            byte,
            b',' | b';' | b'&' | b'"' | b'\'' | b'\\' | b')' | b']' | b'}' | b'<' | b'>'
        )
}

/// The result of a redaction that copied `text` into `out` up to `copied`:
/// `text` itself when nothing was hidden (nothing was written to `out`).
fn finish(text: &str, mut out: String, copied: usize) -> Cow<'_, str> {
    if out.is_empty() {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `text` with URL credentials ([`redact_url_credentials`]) and secret
/// pairs ([`redact_pairs`]) hidden.
pub fn redact(text: &str) -> Cow<'_, str> {
    match redact_url_credentials(text) {
        Cow::Borrowed(text) => redact_pairs(text),
        Cow::Owned(text) => Cow::Owned(redact_pairs(&text).into_owned()),
    }
}

/// `text` with its control characters written as escapes (`\n`, `\r`,
/// `\t`, `\u{1b}`), and the Unicode line and paragraph separators too: the
/// text can then go on a line of a log without starting another one (a
/// forged log line) or steering a terminal.
///
/// Backslashes are left as they are, so the text stays readable; a literal
/// `\n` and an escaped newline look the same, but neither breaks the line.
pub fn escape_control_chars(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether [`escape_control_chars`] escapes `c`: C0 and C1 controls, DEL,
/// and the line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    /// Text a caller controls (a path) is redacted in time linear in its
    /// length: 64 KiB of `a=a=...` takes well under a second even unoptimised.
    #[test]
    fn redaction_is_linear_in_hostile_text() {
        let hostile = "a=".repeat(32 * 1024);
        let started = std::time::Instant::now();
        assert_eq!(redact(&hostile), hostile.as_str());
        let secret_names = "password=".repeat(8 * 1024);
        assert!(!redact(&secret_names).is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    use super::*;

    #[test]
    fn secret_names_are_recognised_whatever_their_case_and_separators() {
        for name in [
            "JWT_HS256_SECRET",
            "client_secret",
            "PGPASSWORD",
            "db_passwd",
            "refresh_token",
            "X-Api-Key",
            "APIKEY",
            "aws_credentials",
            "TLS_PRIVATE_KEY",
            "private-key",
            "Authorization",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "DATABASE_URL",
            "order_id",
            "key",
            "idempotency_key",
            "service",
            "",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn url_passwords_are_hidden_and_user_names_kept() {
        assert_eq!(
            redact_url_credentials("connecting to postgres://order:pw@127.0.0.1:5432/order"),
            "connecting to postgres://order:***@127.0.0.1:5432/order"
        );
        assert_eq!(
            redact_url_credentials("a=http://u:p@h, b=\"https://x:y:z@[::1]:8080?q=1\""),
            "a=http://u:***@h, b=\"https://x:***@[::1]:8080?q=1\""
        );
        // A password holding an `@` is hidden whole.
        assert_eq!(
            redact_url_credentials("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn a_user_part_without_password_is_taken_for_a_token() {
        assert_eq!(
            redact_url_credentials("https://ghp_abc123@github.com/x.git"),
            "https://***@github.com/x.git"
        );
    }

    #[test]
    fn urls_without_credentials_are_left_alone() {
        for text in [
            "http://127.0.0.1:8080/api/v1/users/@me?email=a@b.example",
            "postgres://127.0.0.1/db",
            "postgres://u:@h/db",
            "postgres://u:***@h/db",
            "no url at all: see ://",
            "día café ☕ https://é.example/ü",
        ] {
            assert!(
                matches!(redact_url_credentials(text), Cow::Borrowed(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn secret_pairs_lose_their_values() {
        assert_eq!(
            redact_pairs("JWT_HS256_SECRET=s3cret RUST_LOG=info"),
            "JWT_HS256_SECRET=*** RUST_LOG=info"
        );
        assert_eq!(
            redact_pairs(r#"JWT_HS256_SECRET="s3 \"cr\" et" "gateway""#),
            r#"JWT_HS256_SECRET="***" "gateway""#
        );
        assert_eq!(
            redact_pairs(r#"{"api_key": "k-1", "user": "ann", "token":"t"}"#),
            r#"{"api_key": "***", "user": "ann", "token":"***"}"#
        );
        assert_eq!(
            redact_pairs(r#"Config { db_password: "pw", port: 5432 }"#),
            r#"Config { db_password: "***", port: 5432 }"#
        );
        assert_eq!(
            redact_pairs("GET /pay?amount=3&api_key=abc&x=1 --password=hunter2"),
            "GET /pay?amount=3&api_key=***&x=1 --password=***"
        );
        assert_eq!(redact_pairs("secret = 'a b' done"), "secret = '***' done");
    }

    #[test]
    fn prose_and_harmless_pairs_are_left_alone() {
        for text in [
            "invalid token: expired",
            "bearer token refused",
            "order_id=o-1 status=\"paid\"",
            "password=",
            "password=***",
            "token => x",
            "ünïcode token=",
        ] {
            assert!(matches!(redact_pairs(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn an_unterminated_quoted_secret_is_hidden_to_the_end() {
        assert_eq!(redact_pairs("password=\"abc\\"), "password=\"***");
        assert_eq!(redact_pairs("token='é"), "token='***");
    }

    #[test]
    fn redact_hides_both_urls_and_pairs() {
        assert_eq!(
            redact("DATABASE_URL=postgres://u:pw@h/db PGPASSWORD=pw"),
            "DATABASE_URL=postgres://u:***@h/db PGPASSWORD=***"
        );
        assert!(matches!(redact("nothing to hide"), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_escaped_onto_one_line() {
        assert_eq!(
            escape_control_chars("k\nINFO forged\r\tx\u{1b}[31m\u{7f}\u{85}\u{2028}é"),
            "k\\nINFO forged\\r\\tx\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}é"
        );
        assert!(matches!(
            escape_control_chars("plain \\n text"),
            Cow::Borrowed(_)
        ));
    }
}
