//! AEAD sealing of credentials before they enter an event, and the sealing key's lifecycle.
//!
//! A [`SealingKey`] seals bytes into a [`SealedBox`] with XChaCha20-Poly1305 and a random 24-byte
//! nonce, so the same key can seal any number of messages without nonce bookkeeping. The caller
//! passes associated data (AAD) that binds a box to its context, e.g. the cluster id, so a box
//! copied into another cluster's event fails to open.
//!
//! [`Secret`] wraps a value so that `Debug` and `Display` never print it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
pub use corral_proto::events::SealedBox;
use sha2::{Digest, Sha256};

/// Length of a sealing key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// The environment variable that gives the sealing key (base64 of 32 bytes).
pub const SEAL_KEY_ENV: &str = "CORRAL_SEAL_KEY";

/// What can go wrong loading a key or opening a box.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key text is not standard base64 of exactly 32 bytes.
    #[error("invalid sealing key: {0}")]
    InvalidKey(String),
    /// No key was given and the key file does not exist, and generating one was not allowed.
    #[error("no sealing key: {env_var} is unset and {file} does not exist")]
    MissingKey { env_var: String, file: String },
    /// Reading or writing the key file failed.
    #[error("sealing key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The box names a different key than the one asked to open it.
    #[error("sealed with key {found}, but the key at hand is {expected}")]
    WrongKey { expected: String, found: String },
    /// The box is structurally broken (e.g. a nonce of the wrong length).
    #[error("malformed sealed box: {0}")]
    Malformed(String),
    /// Authentication failed: the ciphertext or the associated data was altered, or the key
    /// differs despite an equal key id (deliberately indistinguishable).
    #[error("sealed box failed authentication (tampered, wrong key or wrong associated data)")]
    Decrypt,
}

/// A 32-byte XChaCha20-Poly1305 key and its id.
///
/// `Debug` shows only the key id.
#[derive(Clone)]
pub struct SealingKey {
    key: [u8; KEY_LEN],
    key_id: String,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SealingKey {
    fn from_bytes(key: [u8; KEY_LEN]) -> SealingKey {
        let digest = Sha256::digest(key);
        let key_id = digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
        SealingKey { key, key_id }
    }

    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> SealingKey {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        SealingKey::from_bytes(key.into())
    }

    /// Parses standard base64 of 32 bytes; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<SealingKey, SecretsError> {
        let bytes = BASE64.decode(s.trim()).map_err(|e| SecretsError::InvalidKey(format!("not base64: {e}")))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| SecretsError::InvalidKey(format!("expected {KEY_LEN} bytes, got {}", b.len())))?;
        Ok(SealingKey::from_bytes(key))
    }

    /// Standard base64 of the key bytes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key)
    }

    /// The first 16 hex characters of sha256(key): names the key in every box it seals.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Loads the key from `file` if it exists, else if `generate_if_missing` creates `file` (mode
    /// 0600, parent dirs created) with a new key. (A key given in the environment is read with
    /// the other process options, and never reaches here.)
    pub fn load_file(file: Option<&Path>, generate_if_missing: bool) -> Result<SealingKey, SecretsError> {
        let missing = || SecretsError::MissingKey {
            env_var: SEAL_KEY_ENV.to_owned(),
            file: file.map_or_else(|| "(no file)".to_owned(), |p| p.display().to_string()),
        };
        let Some(file) = file else {
            return Err(missing());
        };
        match std::fs::read_to_string(file) {
            Ok(text) => return SealingKey::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SecretsError::Io { path: file.to_owned(), source });
            }
        }
        if !generate_if_missing {
            return Err(missing());
        }
        let key = SealingKey::generate();
        match write_new_private_file(file, &key.to_base64()) {
            Ok(()) => Ok(key),
            // Another process created the file between our read and our write: use its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(file)
                    .map_err(|source| SecretsError::Io { path: file.to_owned(), source })?;
                SealingKey::from_base64(&text)
            }
            Err(source) => Err(SecretsError::Io { path: file.to_owned(), source }),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    /// Seals `plaintext`, authenticating `aad` too (which is not stored in the box).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> SealedBox {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption only fails past ~256 GiB of plaintext, which cannot reach this point.
        let ciphertext = self
            .cipher()
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 plaintext within length limit");
        SealedBox { key_id: self.key_id.clone(), nonce: nonce.to_vec(), ciphertext }
    }

    /// Opens a box sealed by this key with the same `aad`.
    pub fn open(&self, sealed: &SealedBox, aad: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.key_id != self.key_id {
            return Err(SecretsError::WrongKey { expected: self.key_id.clone(), found: sealed.key_id.clone() });
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(SecretsError::Malformed(format!(
                "nonce is {} bytes, expected {NONCE_LEN}",
                sealed.nonce.len()
            )));
        }
        self.cipher()
            .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad })
            .map_err(|_| SecretsError::Decrypt)
    }
}

/// Writes `contents` to a new file at `path` readable by the owner only, never replacing an
/// existing file (fails with `AlreadyExists`). Written to a temporary file first and then
/// hard-linked into place, so a crash never leaves a half-written secret behind.
pub fn write_new_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path.file_name().map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{}", std::process::id(), SealingKey::generate().key_id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::hard_link(&tmp, path)
    })();
    // Best effort: the temporary name is unique, so a leftover is harmless.
    let _ = std::fs::remove_file(&tmp);
    result
}

/// A value that must not be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Secret<T>(pub T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The wrapped value; the name makes every read visible in review.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let key = SealingKey::generate();
        let sealed = key.seal(b"hunter2", b"cluster/abc");
        assert_eq!(sealed.key_id, key.key_id());
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_ne!(sealed.ciphertext, b"hunter2");
        assert_eq!(key.open(&sealed, b"cluster/abc").unwrap(), b"hunter2");
    }

    #[test]
    fn empty_plaintext_roundtrips() {
        let key = SealingKey::generate();
        let sealed = key.seal(b"", b"");
        assert_eq!(key.open(&sealed, b"").unwrap(), b"");
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = SealingKey::generate();
        let a = key.seal(b"same", b"");
        let b = key.seal(b"same", b"");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let key = SealingKey::generate();
        let mut sealed = key.seal(b"hunter2", b"aad");
        sealed.ciphertext[0] ^= 1;
        assert!(matches!(key.open(&sealed, b"aad"), Err(SecretsError::Decrypt)));

        let mut sealed = key.seal(b"hunter2", b"aad");
        sealed.nonce[3] ^= 0x80;
        assert!(matches!(key.open(&sealed, b"aad"), Err(SecretsError::Decrypt)));

        let mut sealed = key.seal(b"hunter2", b"aad");
        sealed.nonce.pop();
        assert!(matches!(key.open(&sealed, b"aad"), Err(SecretsError::Malformed(_))));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let key = SealingKey::generate();
        let other = SealingKey::generate();
        let sealed = key.seal(b"hunter2", b"aad");
        assert!(matches!(other.open(&sealed, b"aad"), Err(SecretsError::WrongKey { .. })));
        // Even with a forged key id the tag check fails.
        let mut forged = sealed.clone();
        forged.key_id = other.key_id().to_owned();
        assert!(matches!(other.open(&forged, b"aad"), Err(SecretsError::Decrypt)));
    }

    #[test]
    fn wrong_aad_is_rejected() {
        let key = SealingKey::generate();
        let sealed = key.seal(b"hunter2", b"cluster/a");
        assert!(matches!(key.open(&sealed, b"cluster/b"), Err(SecretsError::Decrypt)));
    }

    #[test]
    fn base64_roundtrip_and_key_id() {
        let key = SealingKey::generate();
        let again = SealingKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(key.key_id().len(), 16);
        assert!(key.key_id().chars().all(|c| c.is_ascii_hexdigit()));
        // Known vector: sha256 of 32 zero bytes starts with 66687aadf862bd77.
        let zero = SealingKey::from_base64(&BASE64.encode([0u8; 32])).unwrap();
        assert_eq!(zero.key_id(), "66687aadf862bd77");
    }

    #[test]
    fn bad_base64_keys_are_rejected() {
        assert!(matches!(SealingKey::from_base64("not base64!"), Err(SecretsError::InvalidKey(_))));
        assert!(matches!(SealingKey::from_base64(&BASE64.encode([1u8; 16])), Err(SecretsError::InvalidKey(_))));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SealingKey::from_base64(&BASE64.encode([0xabu8; 32])).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains(key.key_id()), "{dbg}");
        assert!(!dbg.contains(&key.to_base64()), "{dbg}");
        assert!(!dbg.to_lowercase().contains("abab"), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
    }

    #[test]
    fn file_is_created_with_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/sealing.key");
        let created = SealingKey::load_file(Some(&path), true).unwrap();
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let reloaded = SealingKey::load_file(Some(&path), false).unwrap();
        assert_eq!(reloaded.key_id(), created.key_id());
        let sealed = created.seal(b"x", b"");
        assert_eq!(reloaded.open(&sealed, b"").unwrap(), b"x");
        // No temporary file is left next to the key.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_key_without_generate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealing.key");
        assert!(matches!(SealingKey::load_file(Some(&path), false), Err(SecretsError::MissingKey { .. })));
        assert!(!path.exists());
        assert!(matches!(SealingKey::load_file(None, true), Err(SecretsError::MissingKey { .. })));
    }

    #[test]
    fn corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealing.key");
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(SealingKey::load_file(Some(&path), true), Err(SecretsError::InvalidKey(_))));
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s, Secret::from("hunter2".to_owned()));
        assert_eq!(Secret::<String>::default().into_inner(), "");
    }
}
