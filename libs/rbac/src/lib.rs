//! Argo CD's RBAC policy language (`policy.csv` + `policy.default`), compiled once and evaluated
//! without allocation, because the gateway filters whole cluster lists through it per request.
//!
//! Semantics follow Argo CD's casbin model: `p, sub, res, act, obj, eft` and `g, sub, role`;
//! a request is allowed when some matching `allow` line applies and no matching `deny` line does.
//! Resource, action and object are globs in which only `*` is special and it spans `/` too.
//! Other glob metacharacters (`? [ ] { } \`) are rejected at parse time rather than treated as
//! literals: a silently literal `deny` pattern would fail open.

use std::collections::HashMap;

use thiserror::Error;

/// Argo CD's builtin-policy.csv, narrowed to the resources this control plane knows.
const BUILTIN_POLICY: &str = "
p, role:readonly, clusters, get, *, allow
p, role:readonly, applications, get, *, allow
p, role:readonly, applicationsets, get, *, allow
p, role:readonly, projects, get, *, allow
p, role:readonly, repositories, get, *, allow
p, role:readonly, certificates, get, *, allow
p, role:readonly, accounts, get, *, allow
p, role:readonly, gpgkeys, get, *, allow
p, role:readonly, logs, get, *, allow
p, role:admin, clusters, *, *, allow
p, role:admin, applications, *, *, allow
p, role:admin, applicationsets, *, *, allow
p, role:admin, projects, *, *, allow
p, role:admin, repositories, *, *, allow
p, role:admin, certificates, *, *, allow
p, role:admin, accounts, *, *, allow
p, role:admin, gpgkeys, *, *, allow
p, role:admin, exec, *, *, allow
p, role:admin, extensions, *, *, allow
g, role:admin, role:readonly
g, admin, role:admin
";

/// A policy line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RbacError {
    #[error("policy line {line}: {reason}")]
    Malformed { line: usize, reason: LineError },
}

/// Why a policy line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("unknown line type {0:?} (expected \"p\" or \"g\")")]
    UnknownType(String),
    #[error("\"p\" line needs 4 or 5 fields after \"p\" (subject, resource, action, object[, effect]), found {0}")]
    PolicyFieldCount(usize),
    #[error("\"g\" line needs 2 fields after \"g\" (subject, role), found {0}")]
    GroupFieldCount(usize),
    #[error("empty {0} field")]
    EmptyField(&'static str),
    #[error("effect must be \"allow\" or \"deny\", found {0:?}")]
    BadEffect(String),
    #[error("unsupported glob character {ch:?} in {field} (only '*' is supported)")]
    UnsupportedGlob { field: &'static str, ch: char },
    #[error("unterminated quoted field")]
    UnterminatedQuote,
    #[error("unexpected text after a quoted field")]
    TextAfterQuote,
}

/// A compiled policy: immutable, `Send + Sync`, meant to be shared in an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    nodes: Vec<Node>,
    /// Per subject id: transitive roles (without itself), sorted by name, for `roles_of`.
    roles: Vec<Box<[u32]>>,
    /// Per subject id: ids whose rules apply (itself, its roles, the default role and its roles),
    /// keeping only ids that carry rules so `enforce` scans nothing useless.
    effective: Vec<Box<[u32]>>,
    /// What applies to a subject the policy never mentions: the default role's closure.
    default_effective: Box<[u32]>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    parents: Vec<u32>,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    resource: Glob,
    action: Glob,
    object: Glob,
}

impl Rule {
    // Resource first: it is usually exact and the most selective.
    fn matches(&self, resource: &str, action: &str, object: &str) -> bool {
        self.resource.matches(resource) && self.action.matches(action) && self.object.matches(object)
    }
}

impl Policy {
    /// Compiles the built-in policy plus `csv`. `default_role` (Argo CD's `policy.default`) applies
    /// to every subject on top of its own grants; `None` or an empty string means none.
    pub fn parse(csv: &str, default_role: Option<&str>) -> Result<Policy, RbacError> {
        let mut b = Builder::default();
        // The built-in lines are constant and covered by tests, so an error there is a bug in
        // this crate; still report it rather than panic.
        b.load(BUILTIN_POLICY)?;
        b.load(csv)?;
        let default_role = default_role.map(str::trim).filter(|r| !r.is_empty());
        let default_id = default_role.map(|r| b.intern(r));
        Ok(b.finish(default_id))
    }

    /// Whether `subject` may perform `action` on `object` of kind `resource`. Deny wins.
    pub fn enforce(&self, subject: &str, resource: &str, action: &str, object: &str) -> bool {
        let ids: &[u32] = match self.ids.get(subject) {
            Some(&id) => &self.effective[id as usize],
            None => &self.default_effective,
        };
        let any = |pick: fn(&Node) -> &[Rule]| {
            ids.iter().any(|&id| pick(&self.nodes[id as usize]).iter().any(|r| r.matches(resource, action, object)))
        };
        !any(|n| &n.deny) && any(|n| &n.allow)
    }

    /// The roles `subject` holds through `g` lines, transitively, sorted. The default role is
    /// not included: it is not an assignment, it applies to everyone.
    pub fn roles_of(&self, subject: &str) -> Vec<String> {
        self.ids.get(subject).map_or_else(Vec::new, |&id| {
            self.roles[id as usize].iter().map(|&r| self.names[r as usize].to_string()).collect()
        })
    }
}

#[derive(Default)]
struct Builder {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    nodes: Vec<Node>,
}

impl Builder {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 subjects");
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.nodes.push(Node::default());
        id
    }

    fn load(&mut self, csv: &str) -> Result<(), RbacError> {
        for (i, line) in csv.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.line(line).map_err(|reason| RbacError::Malformed { line: i + 1, reason })?;
        }
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), LineError> {
        let fields = split_fields(line)?;
        let (kind, rest) = fields.split_first().expect("split_fields yields at least one field");
        match kind.as_str() {
            "p" => {
                let (sub, res, act, obj, allow) = match rest {
                    [s, r, a, o] => (s, r, a, o, true),
                    [s, r, a, o, e] => (s, r, a, o, parse_effect(e)?),
                    _ => return Err(LineError::PolicyFieldCount(rest.len())),
                };
                let sub = non_empty(sub, "subject")?;
                let rule = Rule {
                    resource: Glob::compile(non_empty(res, "resource")?, "resource")?,
                    action: Glob::compile(non_empty(act, "action")?, "action")?,
                    object: Glob::compile(non_empty(obj, "object")?, "object")?,
                };
                let id = self.intern(sub);
                let node = &mut self.nodes[id as usize];
                if allow { node.allow.push(rule) } else { node.deny.push(rule) }
            }
            "g" => {
                let [sub, role] = rest else {
                    return Err(LineError::GroupFieldCount(rest.len()));
                };
                let sub = self.intern(non_empty(sub, "subject")?);
                let role = self.intern(non_empty(role, "role")?);
                let parents = &mut self.nodes[sub as usize].parents;
                if !parents.contains(&role) {
                    parents.push(role);
                }
            }
            other => return Err(LineError::UnknownType(other.to_string())),
        }
        Ok(())
    }

    fn finish(self, default_id: Option<u32>) -> Policy {
        let n = self.nodes.len();
        // `seen` is shared across walks and reset per walk, so each closure costs only its size.
        let mut seen = vec![false; n];
        let mut closures: Vec<Vec<u32>> = Vec::with_capacity(n);
        for id in 0..n as u32 {
            closures.push(closure(&self.nodes, id, &mut seen));
        }
        let has_rules = |id: &u32| {
            let node = &self.nodes[*id as usize];
            !node.allow.is_empty() || !node.deny.is_empty()
        };
        let default_closure: &[u32] = default_id.map_or(&[], |d| &closures[d as usize]);
        let default_effective: Box<[u32]> = default_closure.iter().copied().filter(has_rules).collect();
        let effective = closures
            .iter()
            .map(|c| {
                let mut ids: Vec<u32> = c.iter().chain(default_closure).copied().filter(has_rules).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_boxed_slice()
            })
            .collect();
        let roles = closures
            .iter()
            .enumerate()
            .map(|(id, c)| {
                let mut r: Vec<u32> = c.iter().copied().filter(|&x| x as usize != id).collect();
                r.sort_unstable_by(|a, b| self.names[*a as usize].cmp(&self.names[*b as usize]));
                r.into_boxed_slice()
            })
            .collect();
        Policy { ids: self.ids, names: self.names, nodes: self.nodes, roles, effective, default_effective }
    }
}

/// `start` and everything reachable from it over `g` edges; the visited set makes cycles harmless.
fn closure(nodes: &[Node], start: u32, seen: &mut [bool]) -> Vec<u32> {
    let mut out = vec![start];
    seen[start as usize] = true;
    let mut i = 0;
    while let Some(&id) = out.get(i) {
        i += 1;
        for &p in &nodes[id as usize].parents {
            if !std::mem::replace(&mut seen[p as usize], true) {
                out.push(p);
            }
        }
    }
    for &id in &out {
        seen[id as usize] = false;
    }
    out
}

fn parse_effect(e: &str) -> Result<bool, LineError> {
    match e {
        "allow" => Ok(true),
        "deny" => Ok(false),
        other => Err(LineError::BadEffect(other.to_string())),
    }
}

fn non_empty<'a>(s: &'a str, field: &'static str) -> Result<&'a str, LineError> {
    if s.is_empty() { Err(LineError::EmptyField(field)) } else { Ok(s) }
}

/// Splits one CSV line into trimmed fields. Argo CD reads policy lines with Go's CSV reader, so
/// `"..."` quoting (with `""` as an escaped quote) is accepted, e.g. for objects containing commas.
fn split_fields(line: &str) -> Result<Vec<String>, LineError> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = quoted.char_indices();
            let after = loop {
                match chars.next() {
                    None => return Err(LineError::UnterminatedQuote),
                    Some((i, '"')) => {
                        if quoted[i + 1..].starts_with('"') {
                            field.push('"');
                            chars.next();
                        } else {
                            break &quoted[i + 1..];
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            };
            fields.push(field);
            let after = after.trim_start();
            match after.strip_prefix(',') {
                Some(r) => rest = r,
                None if after.is_empty() => return Ok(fields),
                None => return Err(LineError::TextAfterQuote),
            }
        } else {
            match rest.split_once(',') {
                Some((field, r)) => {
                    fields.push(field.trim().to_string());
                    rest = r;
                }
                None => {
                    fields.push(rest.trim().to_string());
                    return Ok(fields);
                }
            }
        }
    }
}

/// A glob where `*` matches any run of characters (including `/`) and everything else is literal.
/// The common shapes get their own variants so matching them is a single comparison.
#[derive(Debug, Clone)]
enum Glob {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `first*middle[0]*...*last`: with only `*` wildcards, leftmost matching of the middle parts
    /// is always correct, so no backtracking is needed.
    Parts {
        first: Box<str>,
        middle: Box<[Box<str>]>,
        last: Box<str>,
    },
}

impl Glob {
    fn compile(pattern: &str, field: &'static str) -> Result<Glob, LineError> {
        if let Some(ch) = pattern.chars().find(|c| matches!(c, '?' | '[' | ']' | '{' | '}' | '\\')) {
            return Err(LineError::UnsupportedGlob { field, ch });
        }
        let parts: Vec<&str> = pattern.split('*').collect();
        Ok(match parts.as_slice() {
            [exact] => Glob::Exact((*exact).into()),
            _ if parts.iter().all(|p| p.is_empty()) => Glob::Any,
            [pre, ""] => Glob::Prefix((*pre).into()),
            ["", suf] => Glob::Suffix((*suf).into()),
            [first, mid @ .., last] => Glob::Parts {
                first: (*first).into(),
                middle: mid.iter().filter(|m| !m.is_empty()).map(|m| (*m).into()).collect(),
                last: (*last).into(),
            },
            [] => unreachable!("split yields at least one part"),
        })
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(e) => s == &**e,
            Glob::Prefix(p) => s.starts_with(&**p),
            Glob::Suffix(x) => s.ends_with(&**x),
            Glob::Parts { first, middle, last } => {
                if s.len() < first.len() + last.len() || !s.starts_with(&**first) || !s.ends_with(&**last) {
                    return false;
                }
                // Both cuts are char boundaries: they end a matched prefix / start a matched suffix.
                let mut hay = &s[first.len()..s.len() - last.len()];
                middle.iter().all(|m| match hay.find(&**m) {
                    Some(at) => {
                        hay = &hay[at + m.len()..];
                        true
                    }
                    None => false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn policy(csv: &str, default_role: Option<&str>) -> Policy {
        Policy::parse(csv, default_role).unwrap()
    }

    fn err(csv: &str) -> RbacError {
        Policy::parse(csv, None).unwrap_err()
    }

    #[test]
    fn policy_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Policy>();
    }

    #[test]
    fn builtin_admin() {
        let p = policy("", None);
        for res in ["clusters", "applications", "applicationsets", "projects", "repositories", "certificates"] {
            assert!(p.enforce("admin", res, "delete", "anything/at/all"), "{res}");
        }
        assert!(p.enforce("admin", "exec", "create", "proj/app"));
        assert!(p.enforce("admin", "extensions", "invoke", "metrics"));
        assert!(p.enforce("admin", "accounts", "update", "alice"));
        // Inherited from role:readonly, but admin has no `*` on logs.
        assert!(p.enforce("admin", "logs", "get", "proj/app"));
        assert!(!p.enforce("admin", "logs", "delete", "proj/app"));
        assert!(!p.enforce("admin", "unknown-resource", "get", "x"));
        assert_eq!(p.roles_of("admin"), ["role:admin", "role:readonly"]);
    }

    #[test]
    fn builtin_readonly() {
        let p = policy("g, viewer, role:readonly", None);
        for res in [
            "clusters",
            "applications",
            "applicationsets",
            "projects",
            "repositories",
            "certificates",
            "accounts",
            "gpgkeys",
            "logs",
        ] {
            assert!(p.enforce("viewer", res, "get", "a/b"), "{res}");
            assert!(!p.enforce("viewer", res, "update", "a/b"), "{res}");
        }
        assert!(!p.enforce("viewer", "exec", "get", "a/b"));
    }

    #[test]
    fn default_role_applies_to_everyone() {
        let p = policy("p, ci, clusters, create, *, allow", Some("role:readonly"));
        assert!(p.enforce("stranger", "clusters", "get", "https://x"));
        assert!(!p.enforce("stranger", "clusters", "delete", "https://x"));
        // Known subjects get the default role on top of their own grants.
        assert!(p.enforce("ci", "clusters", "get", "https://x"));
        assert!(p.enforce("ci", "clusters", "create", "https://x"));
        assert!(p.roles_of("ci").is_empty(), "the default role is not an assignment");

        let p = policy("", Some("  "));
        assert!(!p.enforce("stranger", "clusters", "get", "https://x"), "blank default role means none");
        let p = policy("", Some("role:admin"));
        assert!(p.enforce("stranger", "clusters", "delete", "https://x"), "default role inherits too");
    }

    #[test]
    fn deny_beats_allow() {
        let p = policy(
            "p, role:ops, clusters, *, *, allow
             p, role:ops, clusters, delete, prod-*, deny
             g, bob, role:ops
             p, carol, clusters, get, secret, deny",
            Some("role:readonly"),
        );
        assert!(p.enforce("bob", "clusters", "delete", "dev-1"));
        assert!(!p.enforce("bob", "clusters", "delete", "prod-1"));
        assert!(p.enforce("bob", "clusters", "update", "prod-1"));
        // A subject's own deny overrides the default role's allow.
        assert!(p.enforce("carol", "clusters", "get", "public"));
        assert!(!p.enforce("carol", "clusters", "get", "secret"));
        // Deny on an inherited role applies to the admin as well.
        let p = policy("p, role:readonly, clusters, get, hidden, deny", None);
        assert!(!p.enforce("admin", "clusters", "get", "hidden"));
        assert!(p.enforce("admin", "clusters", "get", "visible"));
    }

    #[test]
    fn glob_objects() {
        let p = policy(
            "p, any, clusters, get, *, allow
             p, pre, clusters, get, prod-*, allow
             p, proj, applications, get, proj/*, allow
             p, url, clusters, get, https://*.example.com, allow
             p, mid, clusters, get, a*b*c, allow",
            None,
        );
        assert!(p.enforce("any", "clusters", "get", "https://k8s.local:6443/path"));
        assert!(p.enforce("any", "clusters", "get", ""));
        assert!(p.enforce("pre", "clusters", "get", "prod-eu/1"));
        assert!(p.enforce("pre", "clusters", "get", "prod-"));
        assert!(!p.enforce("pre", "clusters", "get", "dev-prod-1"));
        assert!(p.enforce("proj", "applications", "get", "proj/app"));
        assert!(p.enforce("proj", "applications", "get", "proj/a/b"));
        assert!(!p.enforce("proj", "applications", "get", "project/app"));
        assert!(!p.enforce("proj", "applications", "get", "other/proj/app"));
        assert!(p.enforce("url", "clusters", "get", "https://eu.k8s.example.com"));
        assert!(!p.enforce("url", "clusters", "get", "https://example.com"));
        assert!(!p.enforce("url", "clusters", "get", "https://x.example.com.evil"));
        assert!(!p.enforce("url", "clusters", "get", "http://x.example.com"));
        assert!(p.enforce("mid", "clusters", "get", "abc"));
        assert!(p.enforce("mid", "clusters", "get", "a-b-c-b-c"));
        assert!(!p.enforce("mid", "clusters", "get", "acb"));
        // An exact object matches only itself.
        let p = policy("p, u, clusters, get, prod, allow", None);
        assert!(p.enforce("u", "clusters", "get", "prod"));
        assert!(!p.enforce("u", "clusters", "get", "prod-1"));
    }

    #[test]
    fn glob_matcher_edges() {
        let g = |p: &str| Glob::compile(p, "object").unwrap();
        assert!(g("**").matches("anything"));
        assert!(!g("a*a").matches("a"), "prefix and suffix must not overlap");
        assert!(g("a*a").matches("aa"));
        assert!(g("*x*").matches("x"));
        assert!(!g("*x*").matches("y"));
        assert!(g("é*ü").matches("éü"));
        assert!(g("a**b").matches("ab"));
    }

    #[test]
    fn globs_in_resource_and_action() {
        let p = policy("p, u, *, get, *, allow\np, u, app*, sync*, *, allow", None);
        assert!(p.enforce("u", "anything", "get", "x"));
        assert!(p.enforce("u", "applications", "sync-now", "x"));
        assert!(!p.enforce("u", "clusters", "sync", "x"));
    }

    #[test]
    fn transitive_roles() {
        let p = policy(
            "g, alice, role:team
             g, role:team, role:deployer
             g, role:deployer, role:readonly
             p, role:deployer, applications, sync, */*, allow",
            None,
        );
        assert!(p.enforce("alice", "applications", "sync", "proj/app"));
        assert!(p.enforce("alice", "clusters", "get", "x"));
        assert!(!p.enforce("alice", "clusters", "delete", "x"));
        assert!(p.enforce("role:team", "applications", "sync", "proj/app"), "roles can be subjects");
        assert_eq!(p.roles_of("alice"), ["role:deployer", "role:readonly", "role:team"]);
        assert!(p.roles_of("nobody").is_empty());
    }

    #[test]
    fn missing_effect_means_allow() {
        let p = policy("p, u, clusters, get, *", None);
        assert!(p.enforce("u", "clusters", "get", "x"));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let p = policy(
            "# header comment\n\n   \n\t# indented comment\n  p ,  u ,\tclusters , get , prod-* ,  allow  \n",
            None,
        );
        assert!(p.enforce("u", "clusters", "get", "prod-1"));
    }

    #[test]
    fn quoted_fields() {
        let p = policy(
            r#"p, u, clusters, get, "a,b", allow
p, u, clusters, get, "say ""hi""" , allow"#,
            None,
        );
        assert!(p.enforce("u", "clusters", "get", "a,b"));
        assert!(p.enforce("u", "clusters", "get", r#"say "hi""#));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let at = |line, reason| RbacError::Malformed { line, reason };
        assert_eq!(err("# c\n\nx, a, b"), at(3, LineError::UnknownType("x".into())));
        assert_eq!(err("p, a, b, c"), at(1, LineError::PolicyFieldCount(3)));
        assert_eq!(err("p, a, b, c, d, allow, extra"), at(1, LineError::PolicyFieldCount(6)));
        assert_eq!(err("g, a"), at(1, LineError::GroupFieldCount(1)));
        assert_eq!(err("g, a, b, c"), at(1, LineError::GroupFieldCount(3)));
        assert_eq!(err("g, a,\n"), at(1, LineError::EmptyField("role")));
        assert_eq!(err("p, , b, c, d"), at(1, LineError::EmptyField("subject")));
        assert_eq!(err("p, a, b, c, d, maybe"), at(1, LineError::BadEffect("maybe".into())));
        assert_eq!(err("p, a, b, c, d, Allow"), at(1, LineError::BadEffect("Allow".into())));
        assert_eq!(err("\n\np, a, b, c, \"{x,y}/*\""), at(3, LineError::UnsupportedGlob { field: "object", ch: '{' }));
        assert_eq!(err("p, a, b, ge?, d"), at(1, LineError::UnsupportedGlob { field: "action", ch: '?' }));
        assert_eq!(err("p, a, b, c, \"d"), at(1, LineError::UnterminatedQuote));
        assert_eq!(err("p, a, b, c, \"d\"x"), at(1, LineError::TextAfterQuote));
        let msg = err("ok\n").to_string();
        assert!(msg.starts_with("policy line 1: unknown line type"), "{msg}");
    }

    #[test]
    fn builtin_policy_parses_alone() {
        let mut b = Builder::default();
        b.load(BUILTIN_POLICY).unwrap();
    }

    #[test]
    fn cycles_are_harmless() {
        let p = policy(
            "g, role:a, role:b
             g, role:b, role:a
             g, role:c, role:c
             g, u, role:a
             p, role:b, clusters, get, *, allow",
            None,
        );
        assert!(p.enforce("u", "clusters", "get", "x"));
        assert!(p.enforce("role:a", "clusters", "get", "x"));
        assert!(!p.enforce("role:c", "clusters", "get", "x"));
        assert_eq!(p.roles_of("u"), ["role:a", "role:b"]);
        assert_eq!(p.roles_of("role:a"), ["role:b"]);
        assert!(p.roles_of("role:c").is_empty());
    }

    #[test]
    fn no_grants_no_default_is_denied() {
        let p = policy("p, someone, clusters, get, *, allow", None);
        assert!(!p.enforce("nobody", "clusters", "get", "x"));
        assert!(!p.enforce("", "clusters", "get", "x"));
        let p = policy("g, lonely, role:nothing", None);
        assert!(!p.enforce("lonely", "clusters", "get", "x"));
    }

    #[test]
    fn many_lines_many_calls() {
        // 100 teams, each with an allow on its own cluster prefix and a deny on its "-locked" ones.
        let mut csv = String::new();
        for t in 0..100 {
            csv.push_str(&format!("p, role:team{t}, clusters, *, team{t}-*, allow\n"));
            csv.push_str(&format!("p, role:team{t}, clusters, delete, team{t}-*-locked, deny\n"));
        }
        csv.push_str("g, alice, role:team7\ng, alice, role:team42\n");
        assert_eq!(csv.lines().count(), 202);
        let p = policy(&csv, Some("role:readonly"));
        let mut allowed = 0;
        for i in 0..10_000 {
            let team = i % 100;
            let object = if i % 3 == 0 { format!("team{team}-{i}-locked") } else { format!("team{team}-{i}") };
            let ok = p.enforce("alice", "clusters", "delete", &object);
            let expected = (team == 7 || team == 42) && i % 3 != 0;
            assert_eq!(ok, expected, "{object}");
            allowed += usize::from(ok);
            assert!(p.enforce("alice", "clusters", "get", &object), "default role grants get");
        }
        assert_eq!(allowed, (0..10_000).filter(|i| (i % 100 == 7 || i % 100 == 42) && i % 3 != 0).count());
    }
}
