//! `google.api.http` path templates: parsed once at start-up, matched per
//! request without touching a descriptor.
//!
//! The grammar (google/api/http.proto):
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//! Written by hand: the one crate with a parser (http_path_template) needs
//! Rust 1.95 and only parses; matching and binding are ours either way.
//!
//! Captured values are percent-decoded except for RFC 6570 reserved
//! characters, which stay escaped (grpc-gateway's default, Envoy's too).

use std::{cmp::Ordering, fmt};

/// One segment of a template, with variables flattened away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Single,
    /// `**`: the rest of the path (zero or more segments); only last.
    Multi,
}

/// A variable: the field it sets and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, e.g. `["organization", "name"]`.
    pub field_path: Vec<String>,
    /// The first segment it covers.
    pub start: usize,
    /// One past the last segment it covers (the template's length when
    /// it ends in `**`).
    pub end: usize,
    /// The segments it was written with (`organizations/*`), for docs.
    pub pattern: Vec<Segment>,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments, variables flattened.
    pub segments: Vec<Segment>,
    /// The custom verb after `:`, if any.
    pub verb: Option<String>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
    source: String,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {reason}")]
pub struct TemplateError {
    /// The template as written.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A matched path: each variable's value, in the order of
/// [`PathTemplate::variables`].
pub type Captures = Vec<String>;

impl PathTemplate {
    /// Parses `template`.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason: &str| TemplateError {
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with '/'"))?;
        // The verb is after the last ':' that is outside braces.
        let (body, verb) = split_verb(rest);
        if let Some(v) = verb
            && (v.is_empty() || v.contains('/'))
        {
            return Err(fail("a verb must be a non-empty literal"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = body;
        while !chars.is_empty() || segments.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| fail("unclosed '{'"))?;
                let (decl, after) = (&inner[..close], &inner[close + 1..]);
                let (path, pattern) = match decl.split_once('=') {
                    Some((p, pat)) => (p, pat),
                    None => (decl, "*"),
                };
                let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|p| !is_ident(p)) {
                    return Err(fail("a variable must name a field path"));
                }
                if pattern.contains('{') {
                    return Err(fail("variables cannot nest"));
                }
                let start = segments.len();
                let pattern: Vec<Segment> = pattern
                    .split('/')
                    .map(|s| segment(s).ok_or_else(|| fail("empty segment in a variable")))
                    .collect::<Result<_, _>>()?;
                segments.extend(pattern.iter().cloned());
                variables.push(Variable {
                    field_path,
                    start,
                    end: segments.len(),
                    pattern,
                });
                chars = after;
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let seg = segment(&chars[..end]).ok_or_else(|| fail("empty segment"))?;
                if chars[..end].contains(['{', '}']) {
                    return Err(fail("a variable must be a whole segment"));
                }
                segments.push(seg);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some("") => return Err(fail("trailing '/'")),
                Some(r) => chars = r,
                None if chars.is_empty() => break,
                None => return Err(fail("a variable must be a whole segment")),
            }
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Multi)
            && i + 1 != segments.len()
        {
            return Err(fail("'**' may only be the last segment"));
        }
        let mut seen: Vec<&Vec<String>> = Vec::new();
        for v in &variables {
            if seen.contains(&&v.field_path) {
                return Err(fail("a field is bound twice"));
            }
            seen.push(&v.field_path);
        }
        Ok(PathTemplate {
            segments,
            verb: verb.map(str::to_owned),
            variables,
            source: template.to_owned(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a request path (without the query string). Returns each
    /// variable's value, percent-decoded per segment, or `None`.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => {
                let body = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                // The verb belongs to the last segment only.
                if body.ends_with('/') {
                    return None;
                }
                body
            }
            None => rest,
        };
        let multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = self.segments.len() - usize::from(multi);
        // First the shape, allocating nothing: a request is tried against
        // many templates and matches one.
        let mut count = 0;
        for (i, part) in parts(rest).enumerate() {
            match self.segments.get(i) {
                Some(Segment::Literal(l)) if l != part => return None,
                Some(Segment::Single) if part.is_empty() => return None,
                None if !multi => return None,
                _ => {}
            }
            count += 1;
        }
        if count < fixed {
            return None;
        }
        // Then each variable's value: its segments as one slice of the path
        // (the '/' between them kept), decoded.
        let mut bounds = Vec::with_capacity(count + 1);
        let mut offset = 0;
        for part in parts(rest) {
            bounds.push(offset);
            offset += part.len() + 1;
        }
        bounds.push(offset);
        let mut captures = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let end = if v.end == self.segments.len() && multi {
                count
            } else {
                v.end
            };
            let value = if end > v.start {
                // `bounds[end]` is one past the '/' after the last segment.
                &rest[bounds[v.start]..bounds[end] - 1]
            } else {
                ""
            };
            captures.push(decode(value)?);
        }
        Some(captures)
    }

    /// Whether both templates match exactly the same paths (the same
    /// segments and verb, whatever the variables are called).
    pub fn same_shape(&self, other: &PathTemplate) -> bool {
        self.segments == other.segments && self.verb == other.verb
    }

    /// Orders templates most specific first: at the first segment that
    /// differs a literal beats `*`, which beats `**`; then the longer wins.
    pub fn specificity(&self, other: &PathTemplate) -> Ordering {
        fn rank(s: &Segment) -> u8 {
            match s {
                Segment::Literal(_) => 0,
                Segment::Single => 1,
                Segment::Multi => 2,
            }
        }
        for (a, b) in self.segments.iter().zip(&other.segments) {
            let o = rank(a).cmp(&rank(b));
            if o != Ordering::Equal {
                return o;
            }
        }
        other
            .segments
            .len()
            .cmp(&self.segments.len())
            .then_with(|| other.verb.is_some().cmp(&self.verb.is_some()))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0i32;
    let mut last = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    match last {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    }
}

fn segment(s: &str) -> Option<Segment> {
    match s {
        "" => None,
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Multi),
        l => Some(Segment::Literal(l.to_owned())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The segments of a path after its leading '/': none for an empty one.
fn parts(rest: &str) -> impl Iterator<Item = &str> {
    (!rest.is_empty())
        .then(|| rest.split('/'))
        .into_iter()
        .flatten()
}

/// Percent-decodes one path segment (or several, '/' being kept); `None` when the escapes are broken or
/// the result is not UTF-8. Escaped RFC 6570 reserved characters stay
/// escaped (`a%2Fb` is captured as `a%2Fb`, not `a/b`), as grpc-gateway's
/// default unescaping mode and Envoy's transcoder do: an escaped `/` in a
/// `*` segment must not become a segment separator in the field.
fn decode(part: &str) -> Option<String> {
    if !part.contains('%') {
        return Some(part.to_owned());
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (hi, lo) = match bytes.get(i + 1..i + 3) {
                Some(&[hi, lo]) => (hex(hi)?, hex(lo)?),
                _ => return None,
            };
            let byte = hi << 4 | lo;
            if RESERVED.contains(&byte) {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 6570's reserved characters (gen-delims and sub-delims).
const RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=";

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_variables_with_patterns() {
        let p = t("/v1/{name=organizations/*/users/*}:setPassword");
        assert_eq!(p.verb.as_deref(), Some("setPassword"));
        assert_eq!(p.segments.len(), 5);
        assert_eq!(p.variables[0].field_path, ["name"]);
        assert_eq!((p.variables[0].start, p.variables[0].end), (1, 5));
        let p = t("/v1/{organization.name=organizations/*}");
        assert_eq!(p.variables[0].field_path, ["organization", "name"]);
        let p = t("/v1/{parent}/things");
        assert_eq!(
            p.segments,
            [
                Segment::Literal("v1".into()),
                Segment::Single,
                Segment::Literal("things".into())
            ]
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "v1/x",
            "/v1/",
            "/v1/{name",
            "/v1/{na-me}",
            "/v1/**/x",
            "/v1/a{name}",
            "/v1/{a}/{a}",
            "/v1//x",
            "/v1/x:",
            "/v1/{a={b}}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn matches_and_captures() {
        let p = t("/v1/{name=organizations/*/users/*}");
        assert_eq!(
            p.matches("/v1/organizations/acme/users/bob"),
            Some(vec!["organizations/acme/users/bob".to_owned()])
        );
        assert_eq!(p.matches("/v1/organizations/acme/users"), None);
        assert_eq!(p.matches("/v1/organizations/acme/users/bob/x"), None);
        assert_eq!(p.matches("/v1/organizations//users/bob"), None);
        assert_eq!(p.matches("/v1/organisations/acme/users/bob"), None);
        assert_eq!(
            t("/v1/{name=organizations/*}").matches("/v1/organizations/a%20b"),
            Some(vec!["organizations/a b".to_owned()])
        );
        assert_eq!(
            t("/v1/{name=organizations/*}").matches("/v1/organizations/%zz"),
            None
        );
        assert_eq!(
            t("/v1/{name=organizations/*}").matches("/v1/organizations/%+f"),
            None
        );
        // Reserved characters stay escaped: no extra segment in the name.
        assert_eq!(
            t("/v1/{name=organizations/*}").matches("/v1/organizations/a%2Fusers%2fb%3Ac%C3%A9"),
            Some(vec!["organizations/a%2Fusers%2fb%3Acé".to_owned()])
        );
        assert_eq!(
            t("/v1/{path=files/**}").matches("/v1/files/a/b%2Fc%20d"),
            Some(vec!["files/a/b%2Fc d".to_owned()])
        );
    }

    #[test]
    fn verbs_must_match() {
        let p = t("/v1/{name=organizations/*}:revoke");
        assert_eq!(
            p.matches("/v1/organizations/a:revoke"),
            Some(vec!["organizations/a".to_owned()])
        );
        assert_eq!(p.matches("/v1/organizations/a:undo"), None);
        assert_eq!(p.matches("/v1/organizations/a"), None);
        assert_eq!(
            t("/v1/{name=organizations/*}").matches("/v1/organizations/a:revoke"),
            Some(vec!["organizations/a:revoke".to_owned()])
        );
    }

    #[test]
    fn double_star_takes_the_rest() {
        let p = t("/v1/files/{path=**}");
        assert_eq!(p.matches("/v1/files/a/b/c"), Some(vec!["a/b/c".to_owned()]));
        assert_eq!(p.matches("/v1/files"), Some(vec![String::new()]));
        let p = t("/v1/{name=shelves/*/books/**}");
        assert_eq!(
            p.matches("/v1/shelves/s/books/x/y"),
            Some(vec!["shelves/s/books/x/y".to_owned()])
        );
    }

    #[test]
    fn shapes_and_specificity() {
        assert!(t("/v1/{name=organizations/*}").same_shape(&t("/v1/organizations/{id}")));
        assert!(!t("/v1/{name=organizations/*}").same_shape(&t("/v1/{name=organizations/*}:x")));
        let mut v = [
            t("/v1/{path=**}"),
            t("/v1/{name=organizations/*}"),
            t("/v1/organizations/root"),
        ];
        v.sort_by(|a, b| a.specificity(b));
        assert_eq!(v[0].as_str(), "/v1/organizations/root");
        assert_eq!(v[2].as_str(), "/v1/{path=**}");
    }
}
