//! Argo CD's tokens: HS256 JWTs (`iss: argocd`, `sub: NAME:login` or `NAME:apiKey`), who they
//! say is calling, and the tokens whose signature has been checked already.

use std::collections::HashMap;
use std::sync::Arc;

use corral_secrets::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    ApiKey,
    /// Authentication is switched off: every caller acts as the admin.
    AuthDisabled,
}

impl TokenKind {
    pub(crate) fn subject_suffix(self) -> &'static str {
        match self {
            TokenKind::Session | TokenKind::AuthDisabled => "login",
            TokenKind::ApiKey => "apiKey",
        }
    }
}

/// Who is calling, established from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub account: String,
    pub kind: TokenKind,
    pub token_id: String,
    pub expires_at: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) jti: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exp: Option<i64>,
    /// Sessions only: the password version they were issued under. A password change ends
    /// every older session at once, even one issued in the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pwv: Option<u64>,
}

/// Tokens whose signature and claims have been checked. A client sends the same token with
/// every call, and checking the signature and parsing the claims again was a fifth of a
/// gateway's work for a Get. What a token says can change its meaning (expiry, revocation, a new
/// password), so that is checked on every use; only the proof that the token is genuine is
/// remembered. The tokens are kept whole (equality, not a digest, decides a match) and never
/// printed: no `Debug` here. Holding them adds nothing to what the signing key beside them gives.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    /// The signing key the entries were checked with: another key forgets them all.
    pub(crate) key: Secret<Vec<u8>>,
    pub(crate) claims: HashMap<String, Arc<Claims>>,
}
