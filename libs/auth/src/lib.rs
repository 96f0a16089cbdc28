//! Accounts, sessions, API tokens and RBAC decisions, the way Argo CD has them, event-sourced.
//!
//! Every change (a password set, a token issued or revoked, a session logged out, a failed login)
//! is an event on the log; every replica folds the events into its own [`state::AuthState`], so a
//! revocation or a lockout on one replica holds on all of them. Tokens are HS256 JWTs signed with
//! a key that is itself an event (sealed), created once by whichever replica starts first.

pub mod account;
pub mod config;
mod config_file;
mod error;
mod follow;
pub mod nats;
mod passwords;
pub mod state;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corral_event_log::{EventLog, LogError};
use corral_proto::account as api;
use corral_proto::auth as ev;
use corral_secrets::{SealingKey, Secret};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use prost::Message;
use tokio::sync::watch;

use account::AccountCommand;
pub use config::{ADMIN, AccountConfig, AuthConfig, Capability};
pub use error::AuthError;
use error::{bad_login, invalid_token};
pub use passwords::InitialAdminPassword;
use passwords::{dummy_hash, generate_password, hash_password, new_password_ok, password_matches};
use state::{AuthState, TokenMeta};
use tokens::{Claims, VerifiedTokens};
pub use tokens::{Principal, TokenKind};

/// The issuer Argo CD puts in its tokens; clients and tools check it.
pub const ISSUER: &str = "argocd";
/// bcrypt cost as Argo CD (Go's bcrypt.DefaultCost).
pub const BCRYPT_COST: u32 = 10;
/// How long to wait for this replica's projection to reach a revision.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Verified tokens remembered at most; past that the memory starts afresh.
const VERIFIED_TOKENS_MAX: usize = 10_000;
const APPEND_RETRIES: usize = 8;

/// A caller's RBAC decisions; `None` policy: authentication is off and everything is allowed.
pub struct Enforcer<'a> {
    who: &'a Principal,
    policy: Option<Arc<corral_rbac::Policy>>,
}

impl Enforcer<'_> {
    /// True when every decision is yes, so callers can skip building objects.
    pub fn unrestricted(&self) -> bool {
        self.policy.is_none()
    }

    pub fn allows(&self, resource: &str, action: &str, object: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| p.enforce(&self.who.account, resource, action, object))
    }
}

pub struct Auth {
    log: Arc<dyn EventLog>,
    key: Arc<SealingKey>,
    state: Arc<RwLock<AuthState>>,
    applied: watch::Receiver<u64>,
    config: RwLock<Arc<AuthConfig>>,
    disabled: bool,
    issuer: RwLock<Option<Arc<dyn TokenIssuer>>>,
    verified: RwLock<VerifiedTokens>,
}

/// The service that issues and revokes API tokens when this process does not (in a deployment,
/// the auth-rotation service). Callers have been authorised before they get here.
#[async_trait::async_trait]
pub trait TokenIssuer: Send + Sync + 'static {
    /// The token and the log revision that recorded it.
    async fn issue(&self, account: &str, expires_in: i64, id: &str, actor: &str) -> Result<(String, u64), AuthError>;
    /// The log revision that recorded the revocation.
    async fn revoke(&self, account: &str, id: &str, actor: &str) -> Result<u64, AuthError>;
}

use corral_events::now_unix;

/// A session token against the account's password as this replica knows it.
#[derive(Debug, PartialEq, Eq)]
enum SessionCheck {
    /// Signed for the current password, and not logged out.
    Current,
    /// Signed for a password set after the one this replica knows.
    Ahead,
    /// Logged out, or signed for a password since replaced.
    Refused,
}

impl Auth {
    /// Starts the projection, catches up with the log, and makes sure a signing key exists.
    pub async fn start(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        config: AuthConfig,
        disabled: bool,
    ) -> Result<Arc<Auth>, AuthError> {
        let state: Arc<RwLock<AuthState>> = Arc::default();
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(follow::run_projection(log.clone(), key.clone(), state.clone(), tx));
        let auth = Arc::new(Auth {
            log,
            key,
            state,
            applied: rx,
            config: RwLock::new(Arc::new(config)),
            disabled,
            issuer: RwLock::new(None),
            verified: RwLock::default(),
        });
        // Ready before the first login of an unknown user, whose refusal must take no longer
        // than a wrong password's.
        tokio::task::spawn_blocking(dummy_hash);
        auth.barrier().await?;
        auth.ensure_signing_key().await?;
        Ok(auth)
    }

    pub fn disabled(&self) -> bool {
        self.disabled
    }

    pub fn config(&self) -> Arc<AuthConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_config(&self, config: AuthConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Reloads the configuration from `path` whenever it changes (checked every second). An
    /// invalid file is reported and the previous configuration stays in force.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    async fn wait_for(&self, seq: u64) -> Result<(), AuthError> {
        let mut rx = self.applied.clone();
        match tokio::time::timeout(CATCH_UP_TIMEOUT, rx.wait_for(|s| *s >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(AuthError::Unavailable("auth projection stopped".into())),
            Err(_) => Err(AuthError::Unavailable(format!("auth projection did not reach revision {seq} in time"))),
        }
    }

    /// Waits until this replica has applied every auth event the log held when the call began.
    pub async fn barrier(&self) -> Result<(), AuthError> {
        let last = self.log.last_seq_matching(&state::subject_filters()).await?;
        self.wait_for(last).await
    }

    async fn append<M: Message>(
        &self,
        subject: String,
        event_type: &str,
        payload: &M,
        expected: Option<u64>,
        actor: &str,
    ) -> Result<Result<u64, ()>, AuthError> {
        self.append_raw(subject, event_type, payload.encode_to_vec(), expected, actor).await
    }

    async fn append_raw(
        &self,
        subject: String,
        event_type: &str,
        payload: Vec<u8>,
        expected: Option<u64>,
        actor: &str,
    ) -> Result<Result<u64, ()>, AuthError> {
        let draft = corral_events::Draft {
            aggregate_id: subject.clone(),
            subject,
            // Each account subject is one aggregate; the expected sequence orders its events.
            aggregate_version: 0,
            expected_subject_seq: expected,
            event_type,
            payload,
            msg_id: None,
        };
        let origin = corral_events::Origin { actor: actor.to_string(), ..Default::default() };
        let (event, _) = corral_events::write(draft, &origin);
        match self.log.append(event).await {
            Ok(out) => Ok(Ok(out.seq)),
            Err(LogError::Conflict { .. }) => Ok(Err(())),
            Err(e) => Err(e.into()),
        }
    }

    /// Decides `command` on an account's subject against the state this replica has and appends
    /// the event, retrying on fresh state when another replica got there first. A refusal judged
    /// on what this replica has applied so far (a token issued moments ago through another
    /// replica, say) is judged again once it has caught up.
    async fn append_account(
        &self,
        account: &str,
        actor: &str,
        command: impl Fn() -> AccountCommand,
    ) -> Result<u64, AuthError> {
        let mut caught_up = false;
        for _ in 0..APPEND_RETRIES {
            let decided = {
                let s = self.read();
                let config = self.config();
                account::decide(account, config.account(account), s.accounts.get(account), command())
                    .map(|event| (event, s.subject_seq(account)))
            };
            let (event, expected) = match decided {
                Ok(d) => d,
                Err(_) if !caught_up => {
                    self.barrier().await?;
                    caught_up = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (event_type, payload) = event.encode(account, &self.key);
            match self.append_raw(state::account_subject(account), event_type, payload, Some(expected), actor).await? {
                Ok(seq) => {
                    self.wait_for(seq).await?;
                    return Ok(seq);
                }
                Err(()) => {
                    self.barrier().await?;
                    caught_up = true;
                }
            }
        }
        Err(AuthError::Unavailable(format!("account {account} is changing too fast; retry")))
    }

    async fn ensure_signing_key(&self) -> Result<(), AuthError> {
        if self.read().signing_key.is_some() {
            return Ok(());
        }
        let mut raw = vec![0u8; 32];
        rand::Rng::fill(&mut rand::rng(), raw.as_mut_slice());
        let payload = ev::SigningKeyCreated { sealed_key: Some(self.key.seal(&raw, state::SIGNING_KEY_AAD)) };
        // Expected sequence 0: of racing replicas exactly one key is written; the others read it.
        match self.append(state::KEY_SUBJECT.into(), state::SIGNING_KEY_CREATED, &payload, Some(0), "").await? {
            Ok(seq) => self.wait_for(seq).await?,
            Err(()) => self.barrier().await?,
        }
        if self.read().signing_key.is_none() {
            return Err(AuthError::Internal("no token signing key after creating one".into()));
        }
        Ok(())
    }

    /// Gives the admin account its first password if it has none. Returns the password when it
    /// was generated here, so the caller can show it once.
    pub async fn ensure_admin_password(
        &self,
        initial: InitialAdminPassword,
    ) -> Result<Option<Secret<String>>, AuthError> {
        if self.read().accounts.get(ADMIN).is_some_and(|a| a.password_hash.is_some()) {
            return Ok(None);
        }
        let (hash, shown) = match initial {
            InitialAdminPassword::Plain(p) => (hash_password(p.expose())?, None),
            InitialAdminPassword::Bcrypt(h) => (h.into_inner(), None),
            InitialAdminPassword::Generate => {
                let p = generate_password();
                (hash_password(&p)?, Some(Secret::new(p)))
            }
        };
        let payload = ev::PasswordSet {
            account: ADMIN.into(),
            sealed_bcrypt_hash: Some(self.key.seal(hash.as_bytes(), &state::password_aad(ADMIN))),
            changed_at_unix: now_unix(),
        };
        // Only if nothing was ever written for the admin: another replica may have won the race.
        match self.append(state::account_subject(ADMIN), state::PASSWORD_SET, &payload, Some(0), "").await? {
            Ok(seq) => {
                self.wait_for(seq).await?;
                Ok(shown)
            }
            Err(()) => {
                self.barrier().await?;
                Ok(None)
            }
        }
    }

    fn signing_key(&self) -> Result<Vec<u8>, AuthError> {
        self.read()
            .signing_key
            .as_ref()
            .map(|k| k.expose().clone())
            .ok_or_else(|| AuthError::Unavailable("token signing key not loaded yet".into()))
    }

    fn sign(
        &self,
        account: &str,
        kind: TokenKind,
        jti: &str,
        iat: i64,
        exp: Option<i64>,
        pwv: Option<u64>,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("{account}:{}", kind.subject_suffix()),
            jti: jti.into(),
            iat,
            nbf: iat,
            exp,
            pwv,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.signing_key()?))
            .map_err(|e| AuthError::Internal(format!("signing token: {e}")))
    }

    /// The claims of a genuine token: signed with the current key, issued by us, in its validity
    /// window when first seen.
    fn decode(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        {
            let state = self.read();
            let key = state
                .signing_key
                .as_ref()
                .ok_or_else(|| AuthError::Unavailable("token signing key not loaded yet".into()))?;
            let verified = self.verified.read().unwrap_or_else(|p| p.into_inner());
            if verified.key.expose() == key.expose()
                && let Some(claims) = verified.claims.get(token)
            {
                return Ok(claims.clone());
            }
        }
        let key = self.signing_key()?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["iss", "sub"]);
        v.leeway = 0;
        v.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key), &v).map_err(|_| invalid_token())?;
        let claims = Arc::new(data.claims);
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if verified.key.expose() != &key {
            *verified = VerifiedTokens { key: Secret::new(key), claims: HashMap::new() };
        }
        if verified.claims.len() >= VERIFIED_TOKENS_MAX {
            verified.claims.clear();
        }
        verified.claims.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    fn session_password_check(&self, account: &str, claims: &Claims) -> SessionCheck {
        let s = self.read();
        let password_seq = s.accounts.get(account).map(|a| a.password_seq).unwrap_or(0);
        if s.revoked_sessions.contains_key(&claims.jti) {
            return SessionCheck::Refused;
        }
        match claims.pwv {
            Some(v) if v == password_seq => SessionCheck::Current,
            Some(v) if v > password_seq => SessionCheck::Ahead,
            _ => SessionCheck::Refused,
        }
    }

    /// Checks `password` against the one `stored` finds (its bcrypt hash and the sequence that
    /// set it) and answers that sequence if it matches. A mismatch is judged again once this
    /// replica has caught up with the log, as the password may have been set moments ago
    /// through another replica; bcrypt runs a second time only if the stored password changed.
    async fn password_caught_up(
        &self,
        password: &Secret<String>,
        stored: impl Fn(&AuthState) -> Option<(Secret<String>, u64)>,
    ) -> Result<Option<u64>, AuthError> {
        let before = stored(&self.read());
        if password_matches(password, before.as_ref().map(|(h, _)| h)).await? {
            return Ok(before.map(|(_, seq)| seq));
        }
        self.barrier().await?;
        let now = stored(&self.read());
        let seq = |p: &Option<(Secret<String>, u64)>| p.as_ref().map(|(_, seq)| *seq);
        if seq(&now) == seq(&before) || !password_matches(password, now.as_ref().map(|(h, _)| h)).await? {
            return Ok(None);
        }
        Ok(seq(&now))
    }

    /// Verifies a bearer token and says who it belongs to.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.decode(token)?;
        if claims.exp.is_some_and(|exp| exp <= now_unix()) {
            return Err(invalid_token());
        }
        let (account, kind) = match claims.sub.rsplit_once(':') {
            Some((a, "apiKey")) => (a.to_string(), TokenKind::ApiKey),
            Some((a, "login")) => (a.to_string(), TokenKind::Session),
            _ => return Err(invalid_token()),
        };
        let config = self.config();
        let capability = if kind == TokenKind::ApiKey { Capability::ApiKey } else { Capability::Login };
        if !config.account(&account).is_some_and(|a| a.can(capability)) {
            return Err(AuthError::Unauthenticated(
                "account is disabled or lacks the capability for this token".into(),
            ));
        }
        let principal = Principal { account, kind, token_id: claims.jti.clone(), expires_at: claims.exp };
        match kind {
            TokenKind::ApiKey => {
                let known = |s: &AuthState| {
                    s.accounts.get(&principal.account).is_some_and(|a| a.tokens.contains_key(&claims.jti))
                };
                {
                    let s = self.read();
                    if known(&s) {
                        return Ok(principal);
                    }
                    if s.accounts.get(&principal.account).is_some_and(|a| a.revoked_tokens.contains(&claims.jti)) {
                        return Err(invalid_token());
                    }
                }
                // Issued moments ago through another replica? Catch up once before refusing.
                self.barrier().await?;
                if known(&self.read()) { Ok(principal) } else { Err(invalid_token()) }
            }
            _ => {
                // Signed for a password this replica has not applied yet (set moments ago
                // through another replica)? Catch up once before judging.
                if self.session_password_check(&principal.account, &claims) == SessionCheck::Ahead {
                    self.barrier().await?;
                }
                match self.session_password_check(&principal.account, &claims) {
                    SessionCheck::Current => Ok(principal),
                    SessionCheck::Ahead | SessionCheck::Refused => Err(invalid_token()),
                }
            }
        }
    }

    /// The principal every caller gets when authentication is switched off.
    pub fn anonymous_admin(&self) -> Principal {
        Principal { account: ADMIN.into(), kind: TokenKind::AuthDisabled, token_id: String::new(), expires_at: None }
    }

    /// Seconds until a login for `username` from `source` is let through, if it is locked out.
    fn locked_out_for(&self, username: &str, source: &str, config: &AuthConfig) -> Option<u64> {
        let (now, window) = (now_unix(), config.failure_window.as_secs() as i64);
        let s = self.read();
        let by_user = AuthState::lockout_ends(&s.user_failures, username, now, window, config.max_login_failures);
        let by_source = (!source.is_empty())
            .then(|| AuthState::lockout_ends(&s.source_failures, source, now, window, config.max_source_failures))
            .flatten();
        let ends = by_user.into_iter().chain(by_source).max()?;
        Some((ends - now).max(1) as u64)
    }

    /// Password login: a session token, or the same refusal for an unknown user and a wrong
    /// password, after the same bcrypt work.
    pub async fn login(&self, username: &str, password: &str, source: &str) -> Result<String, AuthError> {
        let config = self.config();
        if let Some(retry_after_secs) = self.locked_out_for(username, source, &config) {
            return Err(AuthError::TooManyAttempts { retry_after_secs });
        }
        let login_password = |s: &AuthState| {
            let usable = config.account(username).is_some_and(|a| a.can(Capability::Login));
            s.accounts.get(username).filter(|_| usable).and_then(|a| Some((a.password_hash.clone()?, a.password_seq)))
        };
        // Unknown users and wrong passwords alike cost the same bcrypt work and the same wait.
        let checked = self.password_caught_up(&Secret::new(password.to_string()), login_password).await?;
        let login_subject = state::login_subject(username);
        let Some(password_seq) = checked else {
            let failed = ev::LoginFailed { username: username.to_string(), source: source.to_string() };
            let seq = self.append(login_subject, state::LOGIN_FAILED, &failed, None, "").await?.unwrap_or(0);
            self.wait_for(seq).await?;
            return Err(bad_login());
        };
        let had_failures = self.read().user_failures.contains_key(username);
        if had_failures {
            let ok = ev::LoginSucceeded { username: username.to_string() };
            let seq = self.append(login_subject, state::LOGIN_SUCCEEDED, &ok, None, username).await?.unwrap_or(0);
            self.wait_for(seq).await?;
        }
        let iat = now_unix();
        let exp = iat + config.session_duration.as_secs() as i64;
        self.sign(username, TokenKind::Session, &uuid::Uuid::new_v4().to_string(), iat, Some(exp), Some(password_seq))
    }

    /// Logs a session out: its token stops working on every replica.
    pub async fn logout(&self, who: &Principal) -> Result<(), AuthError> {
        if who.kind != TokenKind::Session {
            return Ok(());
        }
        let (token_id, expires_at) = (who.token_id.clone(), who.expires_at.unwrap_or(i64::MAX));
        self.append_account(&who.account, &who.account, || AccountCommand::RevokeSession {
            token_id: token_id.clone(),
            expires_at,
        })
        .await?;
        Ok(())
    }

    pub fn enforce(&self, who: &Principal, resource: &str, action: &str, object: &str) -> bool {
        self.enforcer(who).allows(resource, action, object)
    }

    /// One caller's decisions against the configuration in force now, for many objects (a List).
    pub fn enforcer<'a>(&self, who: &'a Principal) -> Enforcer<'a> {
        Enforcer { who, policy: (who.kind != TokenKind::AuthDisabled).then(|| self.config().policy.clone()) }
    }

    /// An account may always act on itself; on others it needs `accounts, <action>, <name>`.
    fn check_account_permission(&self, who: &Principal, action: &str, name: &str) -> Result<(), AuthError> {
        if who.account == name || self.enforce(who, "accounts", action, name) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    pub async fn update_password(
        &self,
        who: &Principal,
        name: &str,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let target = if name.is_empty() { who.account.clone() } else { name.to_string() };
        self.check_account_permission(who, "update", &target)?;
        new_password_ok(new)?;
        // The current password is the caller's own, as in Argo CD: an admin resetting another
        // account proves who they are, not the other account's secret.
        let own_password =
            |s: &AuthState| s.accounts.get(&who.account).and_then(|a| Some((a.password_hash.clone()?, a.password_seq)));
        if self.password_caught_up(&Secret::new(current.to_string()), own_password).await?.is_none() {
            return Err(AuthError::InvalidArgument("currentPassword: current password does not match".into()));
        }
        let new = Secret::new(new.to_string());
        let hash = tokio::task::spawn_blocking(move || hash_password(new.expose()))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        let (hash, changed_at) = (Secret::new(hash), now_unix());
        self.append_account(&target, &who.account, || AccountCommand::SetPassword { hash: hash.clone(), changed_at })
            .await?;
        Ok(())
    }

    /// Issues an API token for `name`, by this process or by the service tokens are delegated to.
    pub async fn create_token(
        &self,
        who: &Principal,
        name: &str,
        expires_in: i64,
        id: &str,
    ) -> Result<String, AuthError> {
        self.check_account_permission(who, "update", name)?;
        let token = match self.issuer() {
            Some(issuer) => {
                let (token, revision) = issuer.issue(name, expires_in, id, &who.account).await?;
                // Usable through this replica as soon as the answer arrives.
                self.wait_for(revision).await?;
                token
            }
            None => self.issue_api_token(name, expires_in, id, &who.account).await?.0,
        };
        Ok(token)
    }

    pub async fn delete_token(&self, who: &Principal, name: &str, id: &str) -> Result<(), AuthError> {
        self.check_account_permission(who, "update", name)?;
        match self.issuer() {
            Some(issuer) => {
                let revision = issuer.revoke(name, id, &who.account).await?;
                self.wait_for(revision).await
            }
            None => self.revoke_api_token(name, id, &who.account).await.map(|_| ()),
        }
    }

    fn issuer(&self) -> Option<Arc<dyn TokenIssuer>> {
        self.issuer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hands API-token issuing and revocation to another service (the auth-rotation service).
    pub fn delegate_tokens(&self, issuer: Arc<dyn TokenIssuer>) {
        *self.issuer.write().unwrap_or_else(|p| p.into_inner()) = Some(issuer);
    }

    /// Issues an API token (the caller has been authorised): the event, then the signed JWT and
    /// the revision that recorded it.
    pub async fn issue_api_token(
        &self,
        name: &str,
        expires_in: i64,
        id: &str,
        actor: &str,
    ) -> Result<(String, u64), AuthError> {
        let id = if id.is_empty() { uuid::Uuid::new_v4().to_string() } else { id.to_string() };
        let issued_at = now_unix();
        let command = || AccountCommand::IssueToken { id: id.clone(), issued_at, expires_in };
        let revision = self.append_account(name, actor, command).await?;
        let exp = (expires_in > 0).then(|| issued_at.saturating_add(expires_in));
        Ok((self.sign(name, TokenKind::ApiKey, &id, issued_at, exp, None)?, revision))
    }

    /// Revokes an API token (the caller has been authorised); the revision that recorded it.
    pub async fn revoke_api_token(&self, name: &str, id: &str, actor: &str) -> Result<u64, AuthError> {
        self.append_account(name, actor, || AccountCommand::RevokeToken { id: id.to_string() }).await
    }

    fn account_view(&self, a: &AccountConfig) -> api::Account {
        let tokens = self
            .read()
            .accounts
            .get(&a.name)
            .map(|s| {
                s.tokens
                    .values()
                    .map(|t: &TokenMeta| api::Token {
                        id: t.id.clone(),
                        issued_at: t.issued_at,
                        expires_at: t.expires_at,
                    })
                    .collect()
            })
            .unwrap_or_default();
        api::Account {
            name: a.name.clone(),
            enabled: a.enabled,
            capabilities: a.capabilities.iter().map(|c| c.as_str().to_string()).collect(),
            tokens,
        }
    }

    pub async fn list_accounts(&self, who: &Principal) -> Result<api::AccountsList, AuthError> {
        self.barrier().await?;
        let config = self.config();
        let items = config
            .accounts
            .values()
            .filter(|a| a.name == who.account || self.enforce(who, "accounts", "get", &a.name))
            .map(|a| self.account_view(a))
            .collect();
        Ok(api::AccountsList { items })
    }

    pub async fn get_account(&self, who: &Principal, name: &str) -> Result<api::Account, AuthError> {
        self.check_account_permission(who, "get", name)?;
        self.barrier().await?;
        let config = self.config();
        let a = config.account(name).ok_or_else(|| AuthError::NotFound(format!("account '{name}' does not exist")))?;
        Ok(self.account_view(a))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const PASSWORD: &str = "correct horse battery";

    async fn started() -> (tempfile::TempDir, Arc<Auth>) {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(corral_event_log::SledLog::open(dir.path()).unwrap());
        let auth = Auth::start(log, Arc::new(SealingKey::generate()), AuthConfig::default(), false).await.unwrap();
        auth.ensure_admin_password(InitialAdminPassword::Plain(Secret::new(PASSWORD.into()))).await.unwrap();
        (dir, auth)
    }

    fn remembered(auth: &Auth) -> usize {
        auth.verified.read().unwrap().claims.len()
    }

    #[tokio::test]
    async fn a_remembered_token_is_still_checked_for_what_it_says() {
        let (_dir, auth) = started().await;
        let token = auth.login(ADMIN, PASSWORD, "").await.unwrap();
        let who = auth.verify(&token).await.unwrap();
        assert_eq!(remembered(&auth), 1);
        assert_eq!(auth.verify(&token).await.unwrap(), who, "the same answer from memory");
        assert_eq!(remembered(&auth), 1);

        // Another signature on the same claims is checked afresh, and refused.
        let (body, signature) = token.rsplit_once('.').unwrap();
        let other = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{body}.{other}{}", &signature[1..]);
        assert!(matches!(auth.verify(&forged).await, Err(AuthError::Unauthenticated(_))));
        assert_eq!(remembered(&auth), 1, "a refused token is not remembered");

        // A token remembered while valid stops working when it expires.
        let iat = now_unix();
        let short =
            auth.sign(ADMIN, TokenKind::Session, "short", iat, Some(iat + 1), Some(admin_password_seq(&auth))).unwrap();
        auth.verify(&short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(auth.verify(&short).await, Err(AuthError::Unauthenticated(_))));

        // And when its session is logged out.
        auth.logout(&who).await.unwrap();
        assert!(matches!(auth.verify(&token).await, Err(AuthError::Unauthenticated(_))));
    }

    fn admin_password_seq(auth: &Auth) -> u64 {
        auth.read().accounts.get(ADMIN).map(|a| a.password_seq).unwrap()
    }
}
