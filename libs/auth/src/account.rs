//! The account aggregate, as the cluster aggregate is: [`decide`] holds every rule and turns a
//! command into events (or an error) given the account's configuration and state; [`apply`] only
//! folds an event into the state. No I/O: the password is hashed and the time read before a
//! command is decided, and the caller's permission is checked before it too.

use corral_events::event_type::{API_TOKEN_ISSUED, API_TOKEN_REVOKED, PASSWORD_SET, SESSION_REVOKED};
use corral_proto::auth as ev;
use corral_secrets::{SealingKey, Secret};
use prost::Message;

use crate::state::{AccountState, TokenMeta, password_aad};
use crate::{AccountConfig, AuthError, Capability};

/// The longest API token id.
const MAX_TOKEN_ID_LEN: usize = 128;

#[derive(Debug)]
pub enum AccountCommand {
    /// A new password, hashed already, set at `changed_at` (unix seconds).
    SetPassword {
        hash: Secret<String>,
        changed_at: i64,
    },
    /// An API token `id`, issued at `issued_at`, expiring `expires_in` seconds later (0: never).
    IssueToken {
        id: String,
        issued_at: i64,
        expires_in: i64,
    },
    RevokeToken {
        id: String,
    },
    /// A logged-out session: its token is refused until it would have expired anyway.
    RevokeSession {
        token_id: String,
        expires_at: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    PasswordSet { hash: Secret<String>, changed_at: i64 },
    TokenIssued(TokenMeta),
    TokenRevoked { id: String },
    SessionRevoked { token_id: String, expires_at: i64 },
}

/// The rules. `config` is the account as the accounts file defines it (`None`: not defined),
/// `state` what its events add up to.
pub fn decide(
    name: &str,
    config: Option<&AccountConfig>,
    state: Option<&AccountState>,
    command: AccountCommand,
) -> Result<AccountEvent, AuthError> {
    match command {
        AccountCommand::SetPassword { hash, changed_at } => {
            if !config.is_some_and(|a| a.can(Capability::Login)) {
                return Err(AuthError::NotFound(format!("account '{name}' does not exist or has no login capability")));
            }
            Ok(AccountEvent::PasswordSet { hash, changed_at })
        }
        AccountCommand::IssueToken { id, issued_at, expires_in } => {
            let Some(account) = config else {
                return Err(AuthError::NotFound(format!("account '{name}' does not exist")));
            };
            if !account.can(Capability::ApiKey) {
                return Err(AuthError::InvalidArgument(format!("account '{name}' does not have 'apiKey' capability")));
            }
            if expires_in < 0 {
                return Err(AuthError::InvalidArgument(
                    "expiresIn: must be zero (never) or a number of seconds".into(),
                ));
            }
            if id.is_empty() || id.len() > MAX_TOKEN_ID_LEN || id.chars().any(|c| c.is_control()) {
                return Err(AuthError::InvalidArgument(format!("id: 1 to {MAX_TOKEN_ID_LEN} printable characters")));
            }
            if state.is_some_and(|s| s.tokens.contains_key(&id)) {
                return Err(AuthError::AlreadyExists(format!("account '{name}' already has a token with id '{id}'")));
            }
            let expires_at = if expires_in > 0 { issued_at.saturating_add(expires_in) } else { 0 };
            Ok(AccountEvent::TokenIssued(TokenMeta { id, issued_at, expires_at }))
        }
        AccountCommand::RevokeToken { id } => {
            if !state.is_some_and(|s| s.tokens.contains_key(&id)) {
                return Err(AuthError::NotFound(format!("account '{name}' has no token with id '{id}'")));
            }
            Ok(AccountEvent::TokenRevoked { id })
        }
        AccountCommand::RevokeSession { token_id, expires_at } => {
            Ok(AccountEvent::SessionRevoked { token_id, expires_at })
        }
    }
}

/// Folds event `seq` into the account's state.
pub fn apply(state: &mut AccountState, event: &AccountEvent, seq: u64) {
    state.subject_seq = seq;
    match event {
        AccountEvent::PasswordSet { hash, changed_at } => {
            state.password_hash = Some(hash.clone());
            state.password_changed_at = *changed_at;
            state.password_seq = seq;
        }
        AccountEvent::TokenIssued(meta) => {
            state.tokens.insert(meta.id.clone(), meta.clone());
        }
        AccountEvent::TokenRevoked { id } => {
            state.tokens.remove(id);
            state.revoked_tokens.insert(id.clone());
        }
        // Kept by the authentication state as a whole: session ids are looked up without the
        // account.
        AccountEvent::SessionRevoked { .. } => {}
    }
}

impl AccountEvent {
    /// The stored form: its type and payload, the password hash sealed to the account.
    pub fn encode(&self, account: &str, key: &SealingKey) -> (&'static str, Vec<u8>) {
        let account = account.to_string();
        match self {
            AccountEvent::PasswordSet { hash, changed_at } => {
                let sealed = key.seal(hash.expose().as_bytes(), &password_aad(&account));
                let e = ev::PasswordSet { account, sealed_bcrypt_hash: Some(sealed), changed_at_unix: *changed_at };
                (PASSWORD_SET, e.encode_to_vec())
            }
            AccountEvent::TokenIssued(t) => {
                let e = ev::ApiTokenIssued {
                    account,
                    token_id: t.id.clone(),
                    issued_at_unix: t.issued_at,
                    expires_at_unix: t.expires_at,
                };
                (API_TOKEN_ISSUED, e.encode_to_vec())
            }
            AccountEvent::TokenRevoked { id } => {
                (API_TOKEN_REVOKED, ev::ApiTokenRevoked { account, token_id: id.clone() }.encode_to_vec())
            }
            AccountEvent::SessionRevoked { token_id, expires_at } => {
                let e = ev::SessionRevoked { account, token_id: token_id.clone(), expires_at_unix: *expires_at };
                (SESSION_REVOKED, e.encode_to_vec())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn account(name: &str, capabilities: &[Capability]) -> AccountConfig {
        AccountConfig {
            name: name.into(),
            capabilities: capabilities.iter().copied().collect::<BTreeSet<_>>(),
            enabled: true,
        }
    }

    /// The state the events add up to.
    fn given(events: &[AccountEvent]) -> AccountState {
        let mut state = AccountState::default();
        for (i, e) in events.iter().enumerate() {
            apply(&mut state, e, i as u64 + 1);
        }
        state
    }

    fn issue(id: &str, expires_in: i64) -> AccountCommand {
        AccountCommand::IssueToken { id: id.into(), issued_at: 1_000, expires_in }
    }

    fn issued(id: &str) -> AccountEvent {
        AccountEvent::TokenIssued(TokenMeta { id: id.into(), issued_at: 1_000, expires_at: 0 })
    }

    #[test]
    fn an_api_key_account_is_issued_a_token_that_expires_when_asked() {
        let ci = account("ci", &[Capability::ApiKey]);
        // given nothing, when a token expiring in an hour is asked for
        let e = decide("ci", Some(&ci), None, issue("t1", 3600)).unwrap();
        // then it is issued, expiring an hour after it was issued
        assert_eq!(e, AccountEvent::TokenIssued(TokenMeta { id: "t1".into(), issued_at: 1_000, expires_at: 4_600 }));
        // and one without expiry never expires
        let never = decide("ci", Some(&ci), None, issue("t2", 0)).unwrap();
        assert!(matches!(never, AccountEvent::TokenIssued(TokenMeta { expires_at: 0, .. })));
    }

    #[test]
    fn a_token_id_is_given_once_and_is_printable() {
        let ci = account("ci", &[Capability::ApiKey]);
        // given t1 issued
        let state = given(&[issued("t1")]);
        // when t1 is asked for again, then it is refused as existing
        assert!(matches!(decide("ci", Some(&ci), Some(&state), issue("t1", 0)), Err(AuthError::AlreadyExists(_))));
        for bad in ["", "a\nb", &"x".repeat(MAX_TOKEN_ID_LEN + 1)] {
            assert!(
                matches!(decide("ci", Some(&ci), None, issue(bad, 0)), Err(AuthError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tokens_go_only_to_defined_accounts_with_the_api_key_capability_and_never_backwards_in_time() {
        let alice = account("alice", &[Capability::Login]);
        assert!(matches!(decide("ghost", None, None, issue("t", 0)), Err(AuthError::NotFound(_))));
        assert!(matches!(decide("alice", Some(&alice), None, issue("t", 0)), Err(AuthError::InvalidArgument(_))));
        let ci = account("ci", &[Capability::ApiKey]);
        assert!(matches!(decide("ci", Some(&ci), None, issue("t", -1)), Err(AuthError::InvalidArgument(_))));
    }

    #[test]
    fn a_revoked_token_is_gone_and_remembered_as_revoked() {
        // given t1 issued and revoked
        let revoked =
            decide("ci", None, Some(&given(&[issued("t1")])), AccountCommand::RevokeToken { id: "t1".into() });
        let state = given(&[issued("t1"), revoked.unwrap()]);
        assert!(!state.tokens.contains_key("t1"));
        assert!(state.revoked_tokens.contains("t1"));
        // when it is revoked again, or an unknown one is, then it is not found
        for id in ["t1", "t9"] {
            let again = decide("ci", None, Some(&state), AccountCommand::RevokeToken { id: id.into() });
            assert!(matches!(again, Err(AuthError::NotFound(_))), "{id}");
        }
    }

    #[test]
    fn a_password_is_set_for_login_accounts_only_and_versions_the_sessions() {
        let set = || AccountCommand::SetPassword { hash: Secret::new("$2b$10$hash".into()), changed_at: 7 };
        let ci = account("ci", &[Capability::ApiKey]);
        assert!(matches!(decide("ci", Some(&ci), None, set()), Err(AuthError::NotFound(_))));
        assert!(matches!(decide("ghost", None, None, set()), Err(AuthError::NotFound(_))));
        let alice = account("alice", &[Capability::Login]);
        let e = decide("alice", Some(&alice), None, set()).unwrap();
        // given earlier events, then the password's sequence is the event's: sessions signed
        // before it end.
        let state = given(&[issued("t1"), e]);
        assert_eq!((state.password_seq, state.password_changed_at, state.subject_seq), (2, 7, 2));
        assert_eq!(state.password_hash.as_ref().map(|h| h.expose().as_str()), Some("$2b$10$hash"));
    }

    #[test]
    fn the_stored_form_seals_the_password_hash() {
        let key = SealingKey::generate();
        let e = AccountEvent::PasswordSet { hash: Secret::new("$2b$10$secret-hash".into()), changed_at: 7 };
        let (event_type, payload) = e.encode("alice", &key);
        assert_eq!(event_type, PASSWORD_SET);
        assert!(!String::from_utf8_lossy(&payload).contains("secret-hash"));
        let stored = ev::PasswordSet::decode(payload.as_slice()).unwrap();
        let opened = key.open(&stored.sealed_bcrypt_hash.unwrap(), &password_aad("alice")).unwrap();
        assert_eq!(opened, b"$2b$10$secret-hash");
    }
}
