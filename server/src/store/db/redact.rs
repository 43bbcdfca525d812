//! Keeping database credentials out of logs and error messages.
//!
//! A libpq URL can carry a password in its userinfo (`user:pass@`) and in
//! query parameters (`?password=…`, `?sslpassword=…`), percent-encoded or
//! not, and libpq echoes the whole URI in some of its parse errors. So a URL
//! is redacted before it is logged, and the secrets it holds are scrubbed
//! from any message that libpq or diesel produced about it.

/// What replaces a secret.
const MASK: &str = "…";

/// Libpq keywords that name a connection parameter. A bare `--database-url`
/// holding one of them as `key=value` is a libpq connection string, not a
/// SQLite path.
const CONNINFO_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslpassword",
    "service",
    "options",
    "application_name",
    "connect_timeout",
];

/// The parts of a `scheme://[userinfo@]rest[?query]` URL.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    rest: &'a str,
    query: Option<&'a str>,
}

fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    // libpq looks for the credentials before the first '/'. The last '@' of
    // that stretch ends them: a password may hold an unencoded '@' or '?',
    // and when the query has an '@' too, hiding too much is the safe error.
    let authority_end = after.find('/').unwrap_or(after.len());
    let (userinfo, rest) = match after[..authority_end].rfind('@') {
        Some(at) => (Some(&after[..at]), &after[at + 1..]),
        None => (None, after),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    Some(Parts {
        scheme,
        userinfo,
        rest,
        query,
    })
}

/// Whether a query parameter's key names a secret (`password`,
/// `sslpassword`, `passfile`, or anything else about passwords), compared
/// after percent-decoding because libpq decodes keys too.
fn is_secret_key(key: &str) -> bool {
    percent_decode(key).to_ascii_lowercase().contains("pass")
}

/// `url` fit for a log line: the userinfo and the value of every
/// password-like query parameter become `…`; everything else (host, port,
/// database, other parameters) stays, because it is what an operator needs
/// to see. A string that is not a URL is replaced whole.
pub fn redact(url: &str) -> String {
    let Some(p) = split(url) else {
        return MASK.to_owned();
    };
    let mut out = format!("{}://", p.scheme);
    if p.userinfo.is_some() {
        out.push_str(MASK);
        out.push('@');
    }
    out.push_str(p.rest);
    if let Some(query) = p.query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_key(key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// The secret values in `url`, each as written and percent-decoded: what
/// must not appear in a message about it.
pub fn secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(p) = split(url) else {
        out.push(url.to_owned());
        return out;
    };
    if let Some(userinfo) = p.userinfo {
        // The whole userinfo, not only the password: with an unencoded ':'
        // in the password the split point is ambiguous.
        out.push(userinfo.to_owned());
        if let Some((_, password)) = userinfo.split_once(':') {
            out.push(password.to_owned());
        }
    }
    if let Some(query) = p.query {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_key(key)
            {
                out.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    out.retain(|s| !s.is_empty());
    // Longest first, so a secret is not half-replaced by a shorter one
    // it contains.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `message` with every secret of `url` replaced by `…`.
pub fn scrub(url: &str, message: &str) -> String {
    secrets(url)
        .iter()
        .fold(message.to_owned(), |m, s| m.replace(s.as_str(), MASK))
}

/// Whether a scheme-less `--database-url` is a libpq `key=value` string
/// (`host=db password=…`). Such a string would otherwise be taken for a
/// SQLite file name, and logged as one, password and all.
pub fn looks_like_conninfo(s: &str) -> bool {
    s.split_whitespace().any(|token| {
        token.split_once('=').is_some_and(|(key, _)| {
            CONNINFO_KEYWORDS.contains(&key.trim().to_ascii_lowercase().as_str())
        })
    })
}

/// Percent-decodes `s` (lossily: invalid escapes stay as written, invalid
/// UTF-8 is replaced), as libpq reads URL components.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://…@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        // An unencoded '@' or '?' inside the password.
        assert_eq!(redact("postgres://u:p@ss?w@h/db"), "postgres://…@h/db");
    }

    #[test]
    fn password_parameters_are_masked() {
        assert_eq!(
            redact("postgres://127.0.0.1:5432/postgres?user=postgres&password=S3cretPw"),
            "postgres://127.0.0.1:5432/postgres?user=postgres&password=…"
        );
        assert_eq!(
            redact("postgresql://h/db?sslpassword=k3y&sslmode=require&PassFile=/x&%70assword=p"),
            "postgresql://h/db?sslpassword=…&sslmode=require&PassFile=…&%70assword=…"
        );
        assert_eq!(
            redact("postgres://u:a@h/db?password=b&application_name=x"),
            "postgres://…@h/db?password=…&application_name=x"
        );
        for url in [
            "postgres://h/db?password=S3cretPw",
            "postgres://u:S3cretPw@h/db",
            "postgres://u:S3cret%50w@h/db",
            "postgres://h/db?a=1&password=S3cretPw&b=2",
        ] {
            assert!(!redact(url).contains("S3cret"), "{url}");
        }
        assert_eq!(redact("not a url password=x"), "…");
    }

    #[test]
    fn secrets_are_scrubbed_in_raw_and_decoded_form() {
        let url = "postgres://u:pa%24s@h/db?password=S3cret%21";
        let message = format!("bad URI: \"{url}\"; also pa$s and S3cret!");
        let scrubbed = scrub(url, &message);
        for s in ["pa%24s", "pa$s", "S3cret%21", "S3cret!"] {
            assert!(!scrubbed.contains(s), "{s} in {scrubbed}");
        }
        assert!(scrubbed.contains("h/db"));
    }

    #[test]
    fn conninfo_strings_are_recognised() {
        assert!(looks_like_conninfo("host=db password=x"));
        assert!(looks_like_conninfo("dbname=t user=u"));
        assert!(!looks_like_conninfo("data/tollgate.db"));
        assert!(!looks_like_conninfo("./a=b.db"));
    }
}
