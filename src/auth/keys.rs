//! The keys that verify bearer tokens, and the one algorithm they pin.
//!
//! One source per deployment (`config::TokenKeySource`): an HS256 secret, a PEM
//! public key (RSA → RS256, EC P-256 → ES256), or a JSON Web Key Set file
//! (RFC 7517) whose keys a token picks by `kid`. The JWKS file is re-read when
//! its modification time or length changes, and when a token names a `kid`
//! it does not hold (at most once per [`UNKNOWN_KID_REREAD_INTERVAL`]). A
//! re-read that fails keeps the keys read before.

use crate::config::TokenKeySource;
use anyhow::{bail, Context};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Least time between two re-reads of the JWKS file caused by an unknown `kid`,
/// so that tokens with made-up `kid`s cannot make the service read the file
/// on every request.
pub const UNKNOWN_KID_REREAD_INTERVAL: Duration = Duration::from_secs(1);

/// Length in bytes of an uncompressed P-256 public point (0x04 ‖ x ‖ y).
const P256_POINT_BYTES: usize = 65;

/// The verifying keys of a deployment.
pub(crate) enum VerifyingKeys {
    /// One key for every token: `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE`; `kid` is ignored.
    Fixed {
        key: Arc<DecodingKey>,
        algorithm: Algorithm,
    },
    /// `JWT_JWKS_FILE`: the token's `kid` picks the key.
    Jwks(JwksFile),
}

impl VerifyingKeys {
    /// Loads the keys of `source`.
    ///
    /// Errors (start-up): the file cannot be read, holds no usable public key,
    /// holds a private key, an EC key on another curve than P-256, or (JWKS)
    /// keys of both RSA and EC.
    pub(crate) fn load(source: &TokenKeySource) -> anyhow::Result<Self> {
        Ok(match source {
            TokenKeySource::Secret(secret) => VerifyingKeys::Fixed {
                key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
                algorithm: Algorithm::HS256,
            },
            TokenKeySource::PublicKeyFile(path) => {
                let (key, algorithm) = load_pem(path)?;
                VerifyingKeys::Fixed {
                    key: Arc::new(key),
                    algorithm,
                }
            }
            TokenKeySource::JwksFile(path) => VerifyingKeys::Jwks(JwksFile::load(path)?),
        })
    }

    /// The one algorithm a token's header may name.
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKeys::Fixed { algorithm, .. } => *algorithm,
            VerifyingKeys::Jwks(file) => file.algorithm,
        }
    }

    /// The key for a token whose header names `kid`; `None` when a JWKS holds
    /// no key of that `kid` (or the token names none).
    pub(crate) fn key_for(&self, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        match self {
            VerifyingKeys::Fixed { key, .. } => Some(key.clone()),
            VerifyingKeys::Jwks(file) => file.key_for(kid?),
        }
    }
}

/// Reads a PEM public key: RSA → RS256, EC P-256 → ES256.
fn load_pem(path: &Path) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read JWT_PUBLIC_KEY_FILE {}", path.display()))?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        bail!(
            "JWT_PUBLIC_KEY_FILE {} holds a private key: give the public key \
             (openssl pkey -in private.pem -pubout)",
            path.display()
        );
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        if key.as_bytes().len() == P256_POINT_BYTES {
            return Ok((key, Algorithm::ES256));
        }
        bail!(
            "JWT_PUBLIC_KEY_FILE {} holds an EC key on a curve other than P-256: only ES256 is supported",
            path.display()
        );
    }
    bail!(
        "JWT_PUBLIC_KEY_FILE {} is not a PEM RSA or EC P-256 public key",
        path.display()
    )
}

/// Modification time and length of a file: a change of either means re-read.
type FileStamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// A JWKS file and the keys last read from it.
pub(crate) struct JwksFile {
    path: PathBuf,
    /// Pinned at start-up from the keys the file held then.
    algorithm: Algorithm,
    state: RwLock<JwksState>,
}

struct JwksState {
    keys: HashMap<String, Arc<DecodingKey>>,
    stamp: Option<FileStamp>,
    read_at: Instant,
}

impl JwksFile {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let stamp = stamp(path);
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read JWT_JWKS_FILE {}", path.display()))?;
        let keys = usable_keys(&text)
            .with_context(|| format!("JWT_JWKS_FILE {} is not a JWK set", path.display()))?;
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for (_, algorithm, _) in &keys {
            if !algorithms.contains(algorithm) {
                algorithms.push(*algorithm);
            }
        }
        let algorithm = match algorithms.as_slice() {
            [] => bail!(
                "JWT_JWKS_FILE {} holds no usable key: RSA or EC P-256 public keys with a \"kid\"",
                path.display()
            ),
            [one] => *one,
            _ => bail!(
                "JWT_JWKS_FILE {} holds both RSA and EC keys: one algorithm per deployment",
                path.display()
            ),
        };
        Ok(JwksFile {
            path: path.to_owned(),
            algorithm,
            state: RwLock::new(JwksState {
                keys: keys
                    .into_iter()
                    .map(|(kid, _, key)| (kid, Arc::new(key)))
                    .collect(),
                stamp,
                read_at: Instant::now(),
            }),
        })
    }

    fn key_for(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let changed = {
            let state = self.read_state();
            stamp(&self.path).is_some_and(|now| state.stamp != Some(now))
        };
        if changed {
            self.reread();
        }
        if let Some(key) = self.read_state().keys.get(kid) {
            return Some(key.clone());
        }
        let due = self.read_state().read_at.elapsed() >= UNKNOWN_KID_REREAD_INTERVAL;
        if due {
            self.reread();
            return self.read_state().keys.get(kid).cloned();
        }
        None
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, JwksState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the file again; keeps the previous keys when that fails. Logs
    /// name the variable, never the path or key material.
    fn reread(&self) {
        let stamp = stamp(&self.path);
        let read = std::fs::read(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|text| usable_keys(&text));
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.read_at = Instant::now();
        match read {
            Ok(keys) => {
                let total = keys.len();
                state.keys = keys
                    .into_iter()
                    .filter(|k| k.1 == self.algorithm)
                    .map(|(kid, _, key)| (kid, Arc::new(key)))
                    .collect();
                state.stamp = stamp;
                if state.keys.len() < total {
                    log::warn!(
                        "JWT_JWKS_FILE: ignored {} keys that are not {:?}, the algorithm pinned at start-up",
                        total - state.keys.len(),
                        self.algorithm
                    );
                }
                log::info!("JWT_JWKS_FILE re-read: {} keys", state.keys.len());
            }
            Err(e) => {
                log::warn!("JWT_JWKS_FILE could not be re-read, keeping the previous keys: {e}")
            }
        }
    }
}

/// The usable keys of a JWKS document: `(kid, algorithm, key)` of every RSA
/// or EC P-256 public key that has a `kid`, is not for encryption and whose
/// `alg`, if given, matches its type. Other keys are skipped.
///
/// Errors: the text is not JSON of the shape `{"keys": [...]}`.
fn usable_keys(text: &[u8]) -> anyhow::Result<Vec<(String, Algorithm, DecodingKey)>> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(text)?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable_key(&jwk))
        .collect())
}

fn usable_key(jwk: &Jwk) -> Option<(String, Algorithm, DecodingKey)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        if declared.to_string() != format!("{algorithm:?}") {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, algorithm, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_keeps_only_usable_public_keys() {
        let text = br#"{"keys": [
            {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w"}
        ]}"#;
        let keys = usable_keys(text).unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(kids, vec!["a"]);
        assert_eq!(keys[0].1, Algorithm::RS256);
        assert!(usable_keys(b"[1]").is_err());
    }

    #[test]
    fn a_private_or_unreadable_pem_is_refused_at_start_up() {
        let err = load_pem(Path::new("tests/keys/rsa-a.private.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("private key"), "{err}");
        assert!(load_pem(Path::new("tests/keys/nope.pem")).is_err());
        assert_eq!(
            load_pem(Path::new("tests/keys/ec-p256.public.pem"))
                .unwrap()
                .1,
            Algorithm::ES256
        );
        assert_eq!(
            load_pem(Path::new("tests/keys/rsa-a.public.pem"))
                .unwrap()
                .1,
            Algorithm::RS256
        );
    }

    fn jwks(kid: &str, private_pem: &str) -> Vec<u8> {
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(private_pem).unwrap()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_vec(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).unwrap()
    }

    #[test]
    fn an_unknown_kid_rereads_the_file_at_most_once_a_second() {
        let path = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, jwks("a", "tests/keys/rsa-a.private.pem")).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let file = JwksFile::load(&path).unwrap();
        assert_eq!(file.algorithm, Algorithm::RS256);
        assert!(file.key_for("a").is_some());
        // same length, same modification time: only an unknown kid reveals the change
        let rotated = jwks("b", "tests/keys/rsa-b.private.pem");
        assert_eq!(
            rotated.len(),
            std::fs::metadata(&path).unwrap().len() as usize
        );
        std::fs::write(&path, rotated).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert!(
            file.key_for("b").is_none(),
            "re-read within a second of the last"
        );
        std::thread::sleep(UNKNOWN_KID_REREAD_INTERVAL);
        assert!(
            file.key_for("b").is_some(),
            "an unknown kid re-reads the file"
        );
        assert!(file.key_for("a").is_none(), "the rotated-out key is gone");
        let _ = std::fs::remove_file(&path);
    }
}
