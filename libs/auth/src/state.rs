//! The auth projection: what the account events on the log add up to. Kept in memory and rebuilt
//! from the log at start (it is small: keys, hashes, token ids and recent login failures).

use std::collections::{BTreeMap, HashMap, VecDeque};

use corral_event_log::RecordedEvent;
use corral_proto::auth;
use corral_proto::events::EventEnvelope;
use corral_secrets::{SealingKey, Secret};
use prost::Message;

use crate::AuthError;
use crate::account::{self, AccountEvent};

pub use corral_events::event_type::{
    API_TOKEN_ISSUED, API_TOKEN_REVOKED, LOGIN_FAILED, LOGIN_SUCCEEDED, PASSWORD_SET, SESSION_REVOKED,
    SIGNING_KEY_CREATED,
};
pub use corral_events::subject::{
    ACCOUNT as ACCOUNT_SUBJECT_PREFIX, LOGIN as LOGIN_SUBJECT_PREFIX, SIGNING_KEY as KEY_SUBJECT,
};

/// Associated data binding sealed auth material to its purpose.
pub const SIGNING_KEY_AAD: &[u8] = b"corral.auth.signing-key";

pub fn password_aad(account: &str) -> Vec<u8> {
    format!("corral.auth.password:{account}").into_bytes()
}

fn subject_id(kind: &str, name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("corral-{kind}:{name}").as_bytes()).simple().to_string()
}

/// The subjects of every event the auth state is made of: its followers receive only these.
pub fn subject_filters() -> Vec<String> {
    vec![KEY_SUBJECT.to_string(), format!("{ACCOUNT_SUBJECT_PREFIX}>"), format!("{LOGIN_SUBJECT_PREFIX}>")]
}

/// Subject of an account's events; names may hold characters a subject cannot.
pub fn account_subject(account: &str) -> String {
    format!("{ACCOUNT_SUBJECT_PREFIX}{}", subject_id("account", account))
}

pub fn login_subject(username: &str) -> String {
    format!("{LOGIN_SUBJECT_PREFIX}{}", subject_id("login", username))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMeta {
    pub id: String,
    pub issued_at: i64,
    /// 0 = never.
    pub expires_at: i64,
}

#[derive(Debug, Default)]
pub struct AccountState {
    pub subject_seq: u64,
    pub password_hash: Option<Secret<String>>,
    pub password_changed_at: i64,
    /// Log sequence of the last password change; session tokens carry it and die with it.
    pub password_seq: u64,
    pub tokens: BTreeMap<String, TokenMeta>,
    /// Ids of revoked API tokens: refused at once, without catching up with the log first.
    pub revoked_tokens: std::collections::BTreeSet<String>,
}

/// Failure timestamps kept per user or source: enough to decide a lockout, bounded.
const FAILURES_KEPT: usize = 64;

#[derive(Debug, Default)]
pub struct AuthState {
    pub applied: u64,
    pub signing_key: Option<Secret<Vec<u8>>>,
    pub key_subject_seq: u64,
    pub accounts: HashMap<String, AccountState>,
    /// Logged-out session token ids, with their expiry (after which they need no list).
    pub revoked_sessions: HashMap<String, i64>,
    pub user_failures: HashMap<String, VecDeque<i64>>,
    pub source_failures: HashMap<String, VecDeque<i64>>,
}

fn push_failure(map: &mut HashMap<String, VecDeque<i64>>, key: &str, at: i64) {
    let q = map.entry(key.to_string()).or_default();
    q.push_back(at);
    while q.len() > FAILURES_KEPT {
        q.pop_front();
    }
}

impl AuthState {
    /// Applies one logged event; events on other subjects only advance `applied`.
    pub fn apply(&mut self, ev: &RecordedEvent, key: &SealingKey) -> Result<(), AuthError> {
        self.applied = self.applied.max(ev.seq);
        let ours = ev.subject == KEY_SUBJECT
            || ev.subject.starts_with(ACCOUNT_SUBJECT_PREFIX)
            || ev.subject.starts_with(LOGIN_SUBJECT_PREFIX);
        if !ours {
            return Ok(());
        }
        let env = EventEnvelope::decode(ev.payload.as_ref())
            .map_err(|e| AuthError::Internal(format!("bad event {}: {e}", ev.seq)))?;
        let bad = |e: prost::DecodeError| AuthError::Internal(format!("bad {} event {}: {e}", env.event_type, ev.seq));
        let at = env.occurred_at_unix_nanos / 1_000_000_000;
        match env.event_type.as_str() {
            SIGNING_KEY_CREATED => {
                let e = auth::SigningKeyCreated::decode(env.payload.as_slice()).map_err(bad)?;
                let sealed = e.sealed_key.unwrap_or_default();
                let raw =
                    key.open(&sealed, SIGNING_KEY_AAD).map_err(|e| AuthError::Internal(format!("signing key: {e}")))?;
                // The first key wins; a later one (a lost race) is ignored.
                if self.signing_key.is_none() {
                    self.signing_key = Some(Secret::new(raw));
                }
                self.key_subject_seq = ev.seq;
            }
            PASSWORD_SET => {
                let e = auth::PasswordSet::decode(env.payload.as_slice()).map_err(bad)?;
                let sealed = e.sealed_bcrypt_hash.unwrap_or_default();
                let raw = key
                    .open(&sealed, &password_aad(&e.account))
                    .map_err(|err| AuthError::Internal(format!("password of {}: {err}", e.account)))?;
                let hash =
                    String::from_utf8(raw).map_err(|_| AuthError::Internal("password hash is not UTF-8".into()))?;
                let event = AccountEvent::PasswordSet { hash: Secret::new(hash), changed_at: e.changed_at_unix };
                account::apply(self.accounts.entry(e.account).or_default(), &event, ev.seq);
            }
            API_TOKEN_ISSUED => {
                let e = auth::ApiTokenIssued::decode(env.payload.as_slice()).map_err(bad)?;
                let meta = TokenMeta { id: e.token_id, issued_at: e.issued_at_unix, expires_at: e.expires_at_unix };
                account::apply(self.accounts.entry(e.account).or_default(), &AccountEvent::TokenIssued(meta), ev.seq);
            }
            API_TOKEN_REVOKED => {
                let e = auth::ApiTokenRevoked::decode(env.payload.as_slice()).map_err(bad)?;
                let event = AccountEvent::TokenRevoked { id: e.token_id };
                account::apply(self.accounts.entry(e.account).or_default(), &event, ev.seq);
            }
            SESSION_REVOKED => {
                let e = auth::SessionRevoked::decode(env.payload.as_slice()).map_err(bad)?;
                let event =
                    AccountEvent::SessionRevoked { token_id: e.token_id.clone(), expires_at: e.expires_at_unix };
                account::apply(self.accounts.entry(e.account).or_default(), &event, ev.seq);
                self.revoked_sessions.insert(e.token_id, e.expires_at_unix);
                // Sessions that had expired when this one was revoked need no list: the event's
                // own time decides, so that every replica folds the same state.
                self.revoked_sessions.retain(|_, exp| *exp >= at);
            }
            LOGIN_FAILED => {
                let e = auth::LoginFailed::decode(env.payload.as_slice()).map_err(bad)?;
                push_failure(&mut self.user_failures, &e.username, at);
                if !e.source.is_empty() {
                    push_failure(&mut self.source_failures, &e.source, at);
                }
            }
            LOGIN_SUCCEEDED => {
                let e = auth::LoginSucceeded::decode(env.payload.as_slice()).map_err(bad)?;
                self.user_failures.remove(&e.username);
            }
            other => tracing::warn!(event_type = other, seq = ev.seq, "skipping unknown auth event type"),
        }
        Ok(())
    }

    /// When `key` stops being locked out (unix seconds), if `max` or more of its failures fall
    /// in the `window` seconds before `now`: the moment enough of them have aged out of it.
    pub fn lockout_ends(
        map: &HashMap<String, VecDeque<i64>>,
        key: &str,
        now: i64,
        window: i64,
        max: usize,
    ) -> Option<i64> {
        let mut recent: Vec<i64> = map.get(key)?.iter().copied().filter(|t| *t > now - window).collect();
        if max == 0 || recent.len() < max {
            return None;
        }
        recent.sort_unstable();
        Some(recent[recent.len() - max] + window)
    }

    pub fn subject_seq(&self, account: &str) -> u64 {
        self.accounts.get(account).map(|a| a.subject_seq).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockout_ends_when_enough_failures_have_left_the_window() {
        let map = HashMap::from([("alice".to_string(), VecDeque::from([100, 110, 120, 130]))]);
        // Three allowed in 300 s, four in the window: a try is let through once 110 ages out.
        assert_eq!(AuthState::lockout_ends(&map, "alice", 140, 300, 3), Some(410));
        assert_eq!(AuthState::lockout_ends(&map, "alice", 140, 300, 4), Some(400));
        assert_eq!(AuthState::lockout_ends(&map, "alice", 140, 300, 5), None);
        // Only failures inside the window count.
        assert_eq!(AuthState::lockout_ends(&map, "alice", 405, 300, 3), Some(410));
        assert_eq!(AuthState::lockout_ends(&map, "alice", 410, 300, 3), None);
        assert_eq!(AuthState::lockout_ends(&map, "bob", 140, 300, 1), None);
        // 0 means no limit.
        assert_eq!(AuthState::lockout_ends(&map, "alice", 140, 300, 0), None);
    }
}
