//! The accounts configuration, in Argo CD's `argocd-cm` / `argocd-rbac-cm` keys, read from a TOML
//! file of flat keys:
//!
//! ```toml
//! "accounts.alice" = "apiKey, login"
//! "accounts.alice.enabled" = "false"
//! "admin.enabled" = "true"
//! "users.session.duration" = "24h"
//! "policy.default" = "role:readonly"
//! "policy.csv" = """
//! p, role:deployer, clusters, get, *, allow
//! g, ci, role:deployer
//! """
//! ```
//!
//! Nested TOML tables are flattened with dots, so `[accounts] alice = "login"` works too.
//!
//! Or from a folder holding one file per key, named after it (`accounts.alice`, `policy.csv`):
//! what Kubernetes makes of a mounted ConfigMap, so `argocd-cm` and `argocd-rbac-cm` mounted
//! together (a projected volume) are read unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_rbac::Policy;

use crate::AuthError;

pub const ADMIN: &str = "admin";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    Login,
    ApiKey,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Login => "login",
            Capability::ApiKey => "apiKey",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AccountConfig {
    pub name: String,
    pub capabilities: BTreeSet<Capability>,
    pub enabled: bool,
}

impl AccountConfig {
    pub fn can(&self, c: Capability) -> bool {
        self.enabled && self.capabilities.contains(&c)
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub accounts: BTreeMap<String, AccountConfig>,
    pub policy: Arc<Policy>,
    pub session_duration: Duration,
    /// Failed logins per user name within `failure_window` before further attempts are refused.
    pub max_login_failures: usize,
    /// Failed logins per source address within `failure_window` before it is refused.
    pub max_source_failures: usize,
    pub failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig::from_flat(&BTreeMap::new()).unwrap_or_else(|_| unreachable!("the empty configuration is valid"))
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, AuthError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(AuthError::Config(format!("{key}: expected \"true\" or \"false\", got {other:?}"))),
    }
}

fn parse_count(key: &str, v: &str) -> Result<usize, AuthError> {
    v.trim().parse().map_err(|_| AuthError::Config(format!("{key}: expected a whole number, got {v:?}")))
}

/// Go-style durations as Argo CD writes them: `24h`, `90m`, `1h30m`, `45s`.
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, AuthError> {
    let bad = || AuthError::Config(format!("{key}: expected a duration such as 24h, 30m or 90s, got {v:?}"));
    let mut total = 0u64;
    let mut digits = String::new();
    let v = v.trim();
    if v.is_empty() {
        return Err(bad());
    }
    for ch in v.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n.checked_mul(unit).and_then(|x| total.checked_add(x)).ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Account names become RBAC subjects and token subjects (`NAME:apiKey`), so `:` and `,` are out.
fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn parse_capabilities(key: &str, v: &str) -> Result<BTreeSet<Capability>, AuthError> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|c| match c {
            "login" => Ok(Capability::Login),
            "apiKey" => Ok(Capability::ApiKey),
            other => Err(AuthError::Config(format!("{key}: unknown capability {other:?} (expected apiKey, login)"))),
        })
        .collect()
}

impl AuthConfig {
    /// Builds the configuration from flat `argocd-cm`-style keys.
    pub fn from_flat(map: &BTreeMap<String, String>) -> Result<AuthConfig, AuthError> {
        let mut accounts = BTreeMap::new();
        accounts.insert(
            ADMIN.to_string(),
            AccountConfig { name: ADMIN.into(), capabilities: BTreeSet::from([Capability::Login]), enabled: true },
        );
        let mut enabled_flags = Vec::new();
        let mut cfg_policy = String::new();
        let mut default_role = None;
        let mut session_duration = Duration::from_secs(24 * 3600);
        let (mut max_login_failures, mut max_source_failures) = (5, 20);
        let mut failure_window = Duration::from_secs(300);
        for (key, value) in map {
            if let Some(rest) = key.strip_prefix("accounts.") {
                if let Some(name) = rest.strip_suffix(".enabled") {
                    enabled_flags.push((name.to_string(), parse_bool(key, value)?));
                    continue;
                }
                if !valid_account_name(rest) {
                    return Err(AuthError::Config(format!("{key}: invalid account name {rest:?}")));
                }
                let capabilities = parse_capabilities(key, value)?;
                accounts
                    .insert(rest.to_string(), AccountConfig { name: rest.to_string(), capabilities, enabled: true });
                continue;
            }
            match key.as_str() {
                "admin.enabled" => enabled_flags.push((ADMIN.into(), parse_bool(key, value)?)),
                "policy.csv" => cfg_policy = value.clone(),
                "policy.default" => default_role = Some(value.trim().to_string()).filter(|r| !r.is_empty()),
                "users.session.duration" => session_duration = parse_duration(key, value)?,
                "login.maxFailures" => max_login_failures = parse_count(key, value)?,
                "login.maxSourceFailures" => max_source_failures = parse_count(key, value)?,
                "login.failureWindow" => failure_window = parse_duration(key, value)?,
                // Other argocd-cm keys (url, dex.config, ...) belong to parts not served here.
                other => tracing::warn!(key = other, "ignoring unknown configuration key"),
            }
        }
        for (name, enabled) in enabled_flags {
            match accounts.get_mut(&name) {
                Some(a) => a.enabled = enabled,
                None => {
                    return Err(AuthError::Config(format!("accounts.{name}.enabled: no account {name:?} is defined")));
                }
            }
        }
        let policy = Policy::parse(&cfg_policy, default_role.as_deref())
            .map_err(|e| AuthError::Config(format!("policy.csv: {e}")))?;
        Ok(AuthConfig {
            accounts,
            policy: Arc::new(policy),
            session_duration,
            max_login_failures,
            max_source_failures,
            failure_window,
        })
    }

    pub fn from_toml(text: &str) -> Result<AuthConfig, AuthError> {
        AuthConfig::from_flat(&flat_of_toml(text)?)
    }

    /// Reads a TOML file, or a folder of one file per key.
    pub fn load(path: &Path) -> Result<AuthConfig, AuthError> {
        AuthConfig::from_flat_at(path, &read_flat(path)?)
    }

    /// [`AuthConfig::from_flat`], its errors naming where the keys were read.
    pub fn from_flat_at(path: &Path, flat: &BTreeMap<String, String>) -> Result<AuthConfig, AuthError> {
        AuthConfig::from_flat(flat).map_err(|e| match e {
            AuthError::Config(m) => AuthError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.get(name)
    }
}

/// The flat keys at `path`: a TOML file, or a folder of one file per key.
pub fn read_flat(path: &Path) -> Result<BTreeMap<String, String>, AuthError> {
    let cannot = |e: std::io::Error| AuthError::Config(format!("cannot read {}: {e}", path.display()));
    if !std::fs::metadata(path).map_err(cannot)?.is_dir() {
        let text = std::fs::read_to_string(path).map_err(cannot)?;
        return flat_of_toml(&text).map_err(|e| match e {
            AuthError::Config(m) => AuthError::Config(format!("{}: {m}", path.display())),
            other => other,
        });
    }
    let mut flat = BTreeMap::new();
    for entry in std::fs::read_dir(path).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let Some(key) = entry.file_name().to_str().map(str::to_string) else { continue };
        // A ConfigMap mount keeps its files in `..<timestamp>` folders behind a `..data` link,
        // and links each key to them: the keys are the names without a leading dot.
        if key.starts_with('.') {
            continue;
        }
        let file = entry.path();
        if std::fs::metadata(&file).map_err(cannot)?.is_dir() {
            continue;
        }
        let value = std::fs::read_to_string(&file)
            .map_err(|e| AuthError::Config(format!("cannot read {}: {e}", file.display())))?;
        flat.insert(key, value);
    }
    Ok(flat)
}

/// The flat keys of a TOML text, nested tables joined with dots.
fn flat_of_toml(text: &str) -> Result<BTreeMap<String, String>, AuthError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| AuthError::Config(e.message().to_string()))?;
    let mut flat = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut flat)?;
    Ok(flat)
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) -> Result<(), AuthError> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out)?;
            }
            Ok(())
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
            Ok(())
        }
        // Argo CD's ConfigMap values are strings; accept TOML's own booleans and numbers too.
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
            Ok(())
        }
        toml::Value::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
            Ok(())
        }
        _ => Err(AuthError::Config(format!("{prefix}: expected a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argocd_cm_keys() {
        let cfg = AuthConfig::from_toml(
            r#"
"accounts.alice" = "apiKey, login"
"accounts.alice.enabled" = "false"
"accounts.ci" = "apiKey"
"users.session.duration" = "1h30m"
"policy.default" = "role:readonly"
"policy.csv" = """
g, ci, role:admin
"""
"#,
        )
        .expect("valid");
        let alice = cfg.account("alice").expect("alice");
        assert!(!alice.enabled);
        assert!(!alice.can(Capability::Login));
        let ci = cfg.account("ci").expect("ci");
        assert!(ci.can(Capability::ApiKey) && !ci.can(Capability::Login));
        assert!(cfg.account(ADMIN).expect("admin").can(Capability::Login));
        assert_eq!(cfg.session_duration, Duration::from_secs(5400));
        assert!(cfg.policy.enforce("ci", "clusters", "delete", "https://x"));
        assert!(cfg.policy.enforce("alice", "clusters", "get", "https://x"));
        assert!(!cfg.policy.enforce("alice", "clusters", "delete", "https://x"));
    }

    #[test]
    fn nested_tables_and_native_booleans() {
        let cfg = AuthConfig::from_toml("[admin]\nenabled = false\n[accounts]\nbob = \"login\"\n").expect("valid");
        assert!(!cfg.account(ADMIN).expect("admin").enabled);
        assert!(cfg.account("bob").expect("bob").can(Capability::Login));
    }

    #[test]
    fn errors_name_the_key() {
        let e = AuthConfig::from_toml("\"accounts.x\" = \"login, root\"").expect_err("bad capability");
        assert!(e.to_string().contains("accounts.x"), "{e}");
        let e = AuthConfig::from_toml("\"accounts.nobody.enabled\" = \"true\"").expect_err("undefined");
        assert!(e.to_string().contains("nobody"), "{e}");
        let e = AuthConfig::from_toml("\"users.session.duration\" = \"soon\"").expect_err("duration");
        assert!(e.to_string().contains("users.session.duration"), "{e}");
        let e = AuthConfig::from_toml("\"accounts.a:b\" = \"login\"").expect_err("name");
        assert!(e.to_string().contains("invalid account name"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "24h").ok(), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("k", "90s").ok(), Some(Duration::from_secs(90)));
        assert!(parse_duration("k", "10").is_err());
        assert!(parse_duration("k", "0s").is_err());
        assert!(parse_duration("k", "5d").is_err());
    }
}
