//! The HTML of the sign-in, consent and error pages: small, with inline
//! CSS (the CSP allows inline styles and nothing else), and every echoed
//! value escaped with [`escape`].

use std::fmt::Write as _;

use crate::domain::scope::Scope;

/// Escapes `s` for HTML text and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{margin:0;background:#f4f5f7;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328}\
main{max-width:400px;margin:8vh auto;background:#fff;border:1px solid #d0d7de;border-radius:10px;padding:28px 32px}\
h1{font-size:1.35rem;margin:0 0 4px}\
p.sub{margin:0 0 20px;color:#57606a}\
label{display:block;font-weight:600;margin:14px 0 4px}\
input[type=email],input[type=password]{box-sizing:border-box;width:100%;padding:9px 10px;border:1px solid #d0d7de;border-radius:6px;font:inherit}\
button{font:inherit;font-weight:600;padding:9px 16px;border-radius:6px;border:1px solid #1f6feb;background:#1f6feb;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#1f2328;border-color:#d0d7de}\
.actions{display:flex;gap:10px;margin-top:22px}\
.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:8px 12px;margin:0 0 12px}\
ul{padding-left:20px}li{margin:4px 0}code{font-size:.9em}\
footer{margin-top:20px;color:#57606a;font-size:.85rem}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head>\
         <body><main>{body}<footer>Tollgate</footer></main></body></html>",
        escape(title)
    )
}

/// The hidden fields every form carries: the step, the signed pending
/// request and the CSRF token.
fn hidden(step: &str, pending: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"step\" value=\"{}\">\
         <input type=\"hidden\" name=\"request\" value=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(step),
        escape(pending),
        escape(csrf)
    )
}

/// What the sign-in page shows and carries.
pub struct SignIn<'a> {
    /// The client's display name.
    pub client: &'a str,
    /// The organization whose users may sign in.
    pub org: &'a str,
    /// The signed pending request.
    pub pending: &'a str,
    /// The form's CSRF token.
    pub csrf: &'a str,
    /// The email to fill in again after a failed attempt.
    pub email: &'a str,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
}

/// The sign-in page.
pub fn sign_in(p: &SignIn<'_>) -> String {
    let error = p
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1><p class=\"sub\">to continue to <strong>{client}</strong> \
         (organization <code>{org}</code>)</p>{error}\
         <form method=\"post\" action=\"authorize\" autocomplete=\"on\">{hidden}\
         <label for=\"email\">Email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" value=\"{email}\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <div class=\"actions\"><button type=\"submit\" id=\"sign-in\">Sign in</button></div></form>",
        client = escape(p.client),
        org = escape(p.org),
        email = escape(p.email),
        hidden = hidden("signin", p.pending, p.csrf),
    );
    layout("Sign in", &body)
}

/// What the consent page shows and carries.
pub struct Consent<'a> {
    /// The client's display name.
    pub client: &'a str,
    /// Who is signed in (display name).
    pub user: &'a str,
    /// Their email.
    pub email: &'a str,
    /// The scopes asked for.
    pub scopes: &'a [Scope],
    /// The audiences asked for, other than Tollgate itself.
    pub audiences: &'a [String],
    /// The signed pending request.
    pub pending: &'a str,
    /// The form's CSRF token.
    pub csrf: &'a str,
}

/// What a scope lets the client do, in words.
fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Oidc("openid") => "Know who you are".to_owned(),
        Scope::Oidc("profile") => "See your name".to_owned(),
        Scope::Oidc("email") => "See your email address".to_owned(),
        Scope::Oidc("offline_access") => "Stay connected when you are away".to_owned(),
        Scope::Oidc(other) => (*other).to_owned(),
        Scope::All => "Everything your roles allow".to_owned(),
        Scope::Collection(c) => format!("Everything your roles allow on {c}"),
        Scope::Permission(p) => format!("{p}"),
    }
}

/// The consent page.
pub fn consent(p: &Consent<'_>) -> String {
    let mut items = String::new();
    for s in p.scopes {
        let _ = write!(
            items,
            "<li>{} <code>{}</code></li>",
            escape(&describe(s)),
            escape(&s.to_string())
        );
    }
    if items.is_empty() {
        items.push_str("<li>Nothing beyond signing you in</li>");
    }
    let audiences = if p.audiences.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = p
            .audiences
            .iter()
            .map(|a| format!("<code>{}</code>", escape(a)))
            .collect();
        format!("<p>Its tokens will be accepted by {}.</p>", list.join(", "))
    };
    let body = format!(
        "<h1>Allow {client}?</h1><p class=\"sub\">Signed in as <strong>{user}</strong> ({email})</p>\
         <p><strong>{client}</strong> asks to:</p><ul id=\"scopes\">{items}</ul>{audiences}\
         <form method=\"post\" action=\"authorize\">{hidden}\
         <div class=\"actions\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\" class=\"secondary\">Deny</button>\
         </div></form>",
        client = escape(p.client),
        user = escape(p.user),
        email = escape(p.email),
        hidden = hidden("consent", p.pending, p.csrf),
    );
    layout("Authorize", &body)
}

/// An error page: what went wrong, for the person in front of it.
pub fn error(title: &str, message: &str) -> String {
    layout(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
            escape(title),
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_echoed_value_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let evil = "\"><script>alert(1)</script>";
        let page = sign_in(&SignIn {
            client: evil,
            org: evil,
            pending: evil,
            csrf: evil,
            email: evil,
            error: Some(evil),
        });
        assert!(!page.contains("<script>"), "{page}");
        let page = consent(&Consent {
            client: evil,
            user: evil,
            email: evil,
            scopes: &[Scope::Oidc("openid")],
            audiences: &[evil.to_owned()],
            pending: evil,
            csrf: evil,
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(!error(evil, evil).contains("<script>"));
    }
}
