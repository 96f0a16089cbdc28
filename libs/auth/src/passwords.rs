//! Passwords: bcrypt at Argo CD's cost, the rules for a new one, the admin's first one, and the
//! same work for an unknown user as for a wrong password.

use std::path::Path;
use std::sync::OnceLock;

use corral_secrets::Secret;

use crate::{AuthError, BCRYPT_COST};

/// Where the admin's first password comes from.
pub enum InitialAdminPassword {
    /// Generate one, show it once.
    Generate,
    /// A clear-text password given by the operator.
    Plain(Secret<String>),
    /// A bcrypt hash, e.g. Argo CD's `admin.password`, imported as it is.
    Bcrypt(Secret<String>),
}

impl InitialAdminPassword {
    /// From the password given in clear, a file holding it, or a bcrypt hash, in that order.
    pub fn from_options(
        plain: Option<&str>,
        file: Option<&Path>,
        bcrypt: Option<&str>,
    ) -> Result<InitialAdminPassword, AuthError> {
        if let Some(p) = plain.filter(|p| !p.is_empty()) {
            return Ok(InitialAdminPassword::Plain(Secret::new(p.to_string())));
        }
        if let Some(path) = file {
            let p = std::fs::read_to_string(path)
                .map_err(|e| AuthError::Config(format!("admin password file {}: {e}", path.display())))?;
            return Ok(InitialAdminPassword::Plain(Secret::new(p.trim_end_matches(['\r', '\n']).to_string())));
        }
        if let Some(h) = bcrypt.filter(|h| !h.is_empty()) {
            h.parse::<bcrypt::HashParts>()
                .map_err(|_| AuthError::Config("the admin password hash is not a bcrypt hash".into()))?;
            return Ok(InitialAdminPassword::Bcrypt(Secret::new(h.to_string())));
        }
        Ok(InitialAdminPassword::Generate)
    }
}

pub(crate) fn new_password_ok(p: &str) -> Result<(), AuthError> {
    // bcrypt reads at most 72 bytes; a longer password would be silently cut.
    if p.len() < 8 || p.len() > 72 {
        return Err(AuthError::InvalidArgument("newPassword: must be 8 to 72 bytes long".into()));
    }
    Ok(())
}

pub(crate) fn hash_password(p: &str) -> Result<String, AuthError> {
    bcrypt::hash(p, BCRYPT_COST).map_err(|e| AuthError::Internal(format!("bcrypt: {e}")))
}

/// A hash nobody's password matches, verified against for unknown users so that their answer
/// takes as long as a wrong password's.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default())
}

/// Whether `password` matches `hash`; with no hash, the same bcrypt work against a dummy one.
pub(crate) async fn password_matches(
    password: &Secret<String>,
    hash: Option<&Secret<String>>,
) -> Result<bool, AuthError> {
    let password = password.clone();
    let hash = hash.cloned();
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.as_ref().map(|h| h.expose().as_str()).unwrap_or_else(|| dummy_hash());
        bcrypt::verify(password.expose(), hash).unwrap_or(false) && known
    })
    .await
    .map_err(|e| AuthError::Internal(e.to_string()))
}

pub(crate) fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}
