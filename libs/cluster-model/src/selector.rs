//! Kubernetes label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`), as Argo CD's List takes
//! them. kube-core models selectors but does not parse their string form, and pulling it in for
//! this would bring the whole Kubernetes API types; the grammar is small.

use std::collections::HashMap;

use crate::error::RegistryError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

fn invalid(msg: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidArgument(format!("selector: {msg}"))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, RegistryError> {
    let (mut depth, mut start, mut parts) = (0i32, 0usize, Vec::new());
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(invalid("unbalanced parentheses"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(invalid("unbalanced parentheses"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn key(s: &str) -> Result<String, RegistryError> {
    let k = s.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(invalid(format!("invalid key \"{k}\"")));
    }
    Ok(k.to_string())
}

fn set(s: &str) -> Result<Vec<String>, RegistryError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("expected a parenthesised set, got \"{}\"", s.trim())))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, RegistryError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Selector(reqs));
        }
        for part in split_top_level(s)? {
            let p = part.trim();
            if p.is_empty() {
                return Err(invalid("empty requirement"));
            }
            if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Requirement::NotEquals(key(k)?, v.trim().to_string()));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                reqs.push(Requirement::Equals(key(k)?, v.trim().to_string()));
            } else if let Some((k, v)) = p.split_once(" notin ") {
                reqs.push(Requirement::NotIn(key(k)?, set(v)?));
            } else if let Some((k, v)) = p.split_once(" in ") {
                reqs.push(Requirement::In(key(k)?, set(v)?));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push(Requirement::NotExists(key(k)?));
            } else {
                reqs.push(Requirement::Exists(key(p)?));
            }
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_set_and_existence_requirements() {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        for (sel, want) in [
            ("", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env!=prod", false),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("env=prod,tier=db", false),
            ("env in (dev,prod),tier", true),
        ] {
            assert_eq!(Selector::parse(sel).expect(sel).matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for sel in ["env in prod", "a,,b", "env in (a", "bad key=1"] {
            assert!(Selector::parse(sel).is_err(), "{sel}");
        }
    }
}
