//! AIP-134 update masks.

use super::{Error, Result};

/// Resolves `paths` against the mutable fields of a resource.
///
/// - empty: every mutable field the request populated (AIP-134 implicit mask);
/// - `*`: every mutable field (full replacement);
/// - otherwise each path must name a mutable field.
pub fn resolve(
    paths: &[String],
    mutable: &[&'static str],
    populated: impl Fn(&str) -> bool,
) -> Result<Vec<&'static str>> {
    if paths.is_empty() {
        return Ok(mutable.iter().copied().filter(|f| populated(f)).collect());
    }
    if paths.len() == 1 && paths[0] == "*" {
        return Ok(mutable.to_vec());
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match mutable.iter().find(|m| **m == p) {
            Some(m) => {
                if !out.contains(m) {
                    out.push(*m);
                }
            }
            None => {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "'{p}' is not a mutable field; mutable fields: {}",
                        mutable.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[&str] = &["display_name", "state"];

    #[test]
    fn masks() {
        assert_eq!(resolve(&[], M, |f| f == "state").unwrap(), ["state"]);
        assert_eq!(resolve(&["*".into()], M, |_| false).unwrap(), M);
        assert_eq!(
            resolve(&["display_name".into(), "display_name".into()], M, |_| {
                false
            })
            .unwrap(),
            ["display_name"]
        );
        for bad in ["uid", "create_time", "name", "nope", ""] {
            match resolve(&[bad.into()], M, |_| true) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v.0[0].field, "update_mask"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
