//! Sealing private keys at rest: AES-256-GCM (ring) under a 32-byte master
//! key, with the key id as associated data so a sealed blob cannot be moved
//! to another key's row.
//!
//! Sealed format: `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use zeroize::Zeroizing;

use super::KeyError;

const FORMAT_V1: u8 = 1;
/// What the key check value authenticates (see [`MasterKey::check_value`]).
const CHECK_LABEL: &[u8] = b"keyturn master key check v1";
/// File name of the generated master key inside `KEYTURN_KEYS_DIR`.
pub const MASTER_KEY_FILE: &str = "master.key";
/// File name of the next master key inside `KEYTURN_KEYS_DIR` during a
/// master-key change (`keyturn keys new-master-key` writes it, `keyturn keys
/// rewrap` moves the store to it); loaded beside `master.key` when present.
pub const NEW_MASTER_KEY_FILE: &str = "master.key.new";

/// Problems obtaining the master key; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// `KEYTURN_MASTER_KEY` or the key file is not base64 of 32 bytes.
    #[error("{source_name} must be base64 of exactly 32 bytes")]
    Malformed {
        /// Where the bad key came from.
        source_name: String,
    },
    /// Reading or creating the key file failed.
    #[error("cannot use master key file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

/// A private key sealed by [`MasterKey::seal`], as stored. Only the master
/// key opens it; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey(Vec<u8>);

impl SealedKey {
    /// Wraps bytes read from the store (opened later, or refused, by
    /// [`MasterKey::open`]).
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey([sealed])")
    }
}

/// The key-encryption key. Never logged, never serialized.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Decodes a base64 key (from `KEYTURN_MASTER_KEY`).
    pub fn from_base64(encoded: &SecretString, source_name: &str) -> Result<Self, MasterKeyError> {
        let malformed = || MasterKeyError::Malformed {
            source_name: source_name.to_owned(),
        };
        let bytes = Zeroizing::new(
            B64.decode(encoded.expose_secret().trim())
                .map_err(|_| malformed())?,
        );
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        Ok(Self(SecretBox::new(Box::new(array))))
    }

    /// Reads `dir/master.key`, creating it (mode 0600, 32 random bytes) if
    /// it does not exist. Only for a new store: see [`MasterKey::load`].
    pub fn load_or_create(dir: &Path) -> Result<Self, MasterKeyError> {
        match Self::load(dir)? {
            Some(key) => Ok(key),
            None => Self::create(dir),
        }
    }

    /// Where the key file of `dir` is.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(MASTER_KEY_FILE)
    }

    /// Reads `dir/master.key`; `None` if it does not exist (nothing is
    /// created).
    pub fn load(dir: &Path) -> Result<Option<Self>, MasterKeyError> {
        Self::read_file(&dir.join(MASTER_KEY_FILE))
    }

    /// Reads a key file (base64, as [`MasterKey::create_file`] writes it);
    /// `None` if it does not exist. Warns if others may read it.
    pub fn read_file(path: &Path) -> Result<Option<Self>, MasterKeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_readable_by_others(path);
                Self::from_base64(&SecretString::from(text), &path.display().to_string()).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(MasterKeyError::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Creates `dir/master.key` (mode 0600, 32 random bytes); fails if it
    /// exists.
    pub fn create(dir: &Path) -> Result<Self, MasterKeyError> {
        Self::create_file(&dir.join(MASTER_KEY_FILE))
    }

    /// Creates `path` holding a new random key (base64, mode 0600, its
    /// directory made if needed); fails if the file exists, so no key is
    /// ever overwritten.
    pub fn create_file(path: &Path) -> Result<Self, MasterKeyError> {
        let io = |error| MasterKeyError::Io {
            path: path.to_owned(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| io(std::io::Error::other("no system randomness")))?;
        let encoded = Zeroizing::new(B64.encode(bytes.as_ref()));
        let mut file = create_private_file(path).map_err(io)?;
        file.write_all(encoded.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        tracing::info!(path = %path.display(), "created a new master key");
        Ok(Self(SecretBox::new(Box::new(*bytes))))
    }

    /// A value the store keeps to recognise this key without holding it:
    /// HMAC-SHA256 of a fixed label under the key, base64. Learning it tells
    /// nothing about the key.
    pub fn check_value(&self) -> String {
        B64.encode(self.check_tag().as_ref())
    }

    /// Whether `stored` (from [`MasterKey::check_value`]) was made by this
    /// key; compared in constant time.
    pub fn matches_check(&self, stored: &str) -> bool {
        let Ok(stored) = B64.decode(stored.trim()) else {
            return false;
        };
        hmac::verify(&self.check_key(), CHECK_LABEL, &stored).is_ok()
    }

    fn check_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.expose_secret())
    }

    fn check_tag(&self) -> hmac::Tag {
        hmac::sign(&self.check_key(), CHECK_LABEL)
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always valid for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts 32-byte keys"));
        LessSafeKey::new(unbound)
    }

    /// Encrypts `plaintext`, binding it to `kid`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<SealedKey, KeyError> {
        // ring's errors carry no detail; the variant says what failed.
        let fail = || KeyError::Seal {
            kid: kid.to_owned(),
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| fail())?;
        let mut buffer = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| fail())?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        Ok(SealedKey(sealed))
    }

    /// Decrypts a blob made by [`MasterKey::seal`] for the same `kid`.
    pub fn open(&self, kid: &str, sealed: &SealedKey) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let fail = || KeyError::Unseal {
            kid: kid.to_owned(),
        };
        let (&version, rest) = sealed.0.split_first().ok_or_else(fail)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = self
            .aead()
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| fail())?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

/// Every master key a process holds: normally one; during a master-key
/// change (`keyturn keys rewrap`) the store's current key and the other
/// one, in any order (like ORY Hydra's `secrets.system`, but the order does
/// not choose the sealing key: the store's check value does, so instances
/// listing `[old, new]` and `[new, old]` agree). Never empty.
pub struct MasterKeys(Vec<MasterKey>);

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKeys([{} redacted])", self.0.len())
    }
}

impl From<MasterKey> for MasterKeys {
    fn from(key: MasterKey) -> Self {
        Self(vec![key])
    }
}

impl MasterKeys {
    /// `KEYTURN_MASTER_KEY`: one base64 key, or several separated by commas
    /// (base64 has no comma). A bad entry is named by its position, never
    /// shown.
    pub fn from_list(encoded: &SecretString, source_name: &str) -> Result<Self, MasterKeyError> {
        let entries: Vec<&str> = encoded.expose_secret().split(',').collect();
        let keys = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let name = if entries.len() == 1 {
                    source_name.to_owned()
                } else {
                    format!("{source_name} entry {} of {}", i + 1, entries.len())
                };
                MasterKey::from_base64(&SecretString::from((*entry).to_owned()), &name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(keys))
    }

    /// The key files of `dir`: `master.key` and, during a change,
    /// `master.key.new`; `None` if neither exists (nothing is created).
    pub fn load_dir(dir: &Path) -> Result<Option<Self>, MasterKeyError> {
        let mut keys = Vec::new();
        for name in [MASTER_KEY_FILE, NEW_MASTER_KEY_FILE] {
            keys.extend(MasterKey::read_file(&dir.join(name))?);
        }
        Ok((!keys.is_empty()).then_some(Self(keys)))
    }

    /// Each key, in the order listed.
    pub fn iter(&self) -> impl Iterator<Item = &MasterKey> {
        self.0.iter()
    }

    /// The first key listed: the one a new, empty store is sealed with.
    pub fn first(&self) -> &MasterKey {
        // Never empty: every constructor makes at least one key.
        &self.0[0]
    }

    /// The key whose check value the store records (see
    /// [`MasterKey::check_value`]): the only one that may seal.
    pub fn matching(&self, check: &str) -> Option<&MasterKey> {
        self.0.iter().find(|key| key.matches_check(check))
    }

    /// Whether any of these keys is the one `check` names.
    pub fn holds(&self, check: &str) -> bool {
        self.matching(check).is_some()
    }

    /// Opens `sealed` with whichever key sealed it (the AEAD tag tells a
    /// wrong key at once, so trying each costs one failed decryption).
    pub fn open(&self, kid: &str, sealed: &SealedKey) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.0
            .iter()
            .find_map(|key| key.open(kid, sealed).ok())
            .ok_or_else(|| KeyError::Unseal {
                kid: kid.to_owned(),
            })
    }
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("kid-a", b"private bytes").unwrap();
        assert!(!sealed.as_bytes().windows(13).any(|w| w == b"private bytes"));
        assert_eq!(format!("{sealed:?}"), "SealedKey([sealed])");
        assert_eq!(
            key.open("kid-a", &sealed).unwrap().as_slice(),
            b"private bytes"
        );
        assert!(key.open("kid-b", &sealed).is_err(), "bound to its kid");
        let mut tampered = sealed.clone();
        *tampered.0.last_mut().unwrap() ^= 1;
        assert!(key.open("kid-a", &tampered).is_err());
        // Loading again reads the same key.
        let again = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open("kid-a", &sealed).unwrap().as_slice(),
            b"private bytes"
        );
    }

    #[cfg(unix)]
    #[test]
    fn master_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        MasterKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn check_value_recognises_only_its_key() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert!(
            MasterKey::load(a.path()).unwrap().is_none(),
            "nothing created"
        );
        assert!(!a.path().join(MASTER_KEY_FILE).exists());
        let key_a = MasterKey::create(a.path()).unwrap();
        let key_b = MasterKey::create(b.path()).unwrap();
        let check = key_a.check_value();
        assert!(key_a.matches_check(&check));
        assert!(!key_b.matches_check(&check));
        assert!(!key_a.matches_check("not base64!"));
        let encoded = std::fs::read_to_string(a.path().join(MASTER_KEY_FILE)).unwrap();
        assert!(!check.contains(encoded.trim()), "never the key itself");
        assert!(MasterKey::create(a.path()).is_err(), "never overwritten");
    }

    #[test]
    fn a_list_seals_with_the_key_the_store_checks_whatever_the_order() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let key_a = MasterKey::create(a.path()).unwrap();
        MasterKey::create(b.path()).unwrap();
        let text = |d: &tempfile::TempDir| std::fs::read_to_string(d.path().join(MASTER_KEY_FILE));
        let (text_a, text_b) = (text(&a).unwrap(), text(&b).unwrap());
        let ab = MasterKeys::from_list(
            &SecretString::from(format!("{}, {}", text_a.trim(), text_b.trim())),
            "KEYTURN_MASTER_KEY",
        )
        .unwrap();
        let ba = MasterKeys::from_list(
            &SecretString::from(format!("{},{}", text_b.trim(), text_a.trim())),
            "KEYTURN_MASTER_KEY",
        )
        .unwrap();
        let check = key_a.check_value();
        for list in [&ab, &ba] {
            assert!(list.holds(&check));
            let sealer = list.matching(&check).unwrap();
            let sealed = sealer.seal("kid", b"secret").unwrap();
            assert_eq!(key_a.open("kid", &sealed).unwrap().as_slice(), b"secret");
            assert_eq!(list.open("kid", &sealed).unwrap().as_slice(), b"secret");
        }
        assert_eq!(format!("{ab:?}"), "MasterKeys([2 redacted])");
        let only_b = MasterKeys::from_list(&SecretString::from(text_b.clone()), "X").unwrap();
        assert!(!only_b.holds(&check));
        let sealed = key_a.seal("kid", b"secret").unwrap();
        assert!(only_b.open("kid", &sealed).is_err());

        // The keys dir: master.key and, during a change, master.key.new.
        std::fs::write(a.path().join(NEW_MASTER_KEY_FILE), &text_b).unwrap();
        let dir = MasterKeys::load_dir(a.path()).unwrap().unwrap();
        assert_eq!(dir.iter().count(), 2);
        assert!(dir.holds(&check) && dir.first().matches_check(&check));
        let empty = tempfile::tempdir().unwrap();
        assert!(MasterKeys::load_dir(empty.path()).unwrap().is_none());
    }

    #[test]
    fn a_bad_list_entry_is_named_by_position_never_shown() {
        let good = B64.encode([7u8; 32]);
        for (list, named) in [
            (
                format!("{good},c2hvcnQ="),
                "KEYTURN_MASTER_KEY entry 2 of 2",
            ),
            (format!("{good},"), "KEYTURN_MASTER_KEY entry 2 of 2"),
            (
                format!("not base64!,{good}"),
                "KEYTURN_MASTER_KEY entry 1 of 2",
            ),
        ] {
            let err = MasterKeys::from_list(&SecretString::from(list), "KEYTURN_MASTER_KEY")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(named), "{err}");
            assert!(!err.contains(&good) && !err.contains("c2hvcnQ"), "{err}");
        }
    }

    #[test]
    fn malformed_env_key_names_its_source() {
        let err = MasterKey::from_base64(&SecretString::from("c2hvcnQ="), "KEYTURN_MASTER_KEY")
            .unwrap_err();
        assert!(err.to_string().contains("KEYTURN_MASTER_KEY"));
    }
}
