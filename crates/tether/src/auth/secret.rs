//! The gateway's secret: read from (or created in) the secret file, and the keys derived from it.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::TryRng;
use sha2::Sha256;

/// Raw secret bytes. `Debug` is masked so the secret never reaches a log.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cannot read the secret file {path}; check its permissions or pass another --secret-file"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the secret file {path}; make its directory writable or pass another --secret-file")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret file {path} holds fewer than 32 bytes; delete it to have tether create a new one")]
    TooShort { path: PathBuf },
}

/// The smallest secret we accept, in bytes of file content.
const MIN_SECRET_LEN: usize = 32;

impl Secret {
    /// Reads the secret file, or creates it (mode 0600) with 32 random bytes in hex.
    pub fn load_or_create(path: &Path) -> Result<Secret, SecretError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let trimmed = bytes.trim_ascii().to_vec();
                if trimmed.len() < MIN_SECRET_LEN {
                    return Err(SecretError::TooShort { path: path.into() });
                }
                Ok(Secret(trimmed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(SecretError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    fn create(path: &Path) -> Result<Secret, SecretError> {
        let create_err = |source| SecretError::Create {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Only this user may look into a directory tether makes (existing ones are kept).
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create_err)?;
        }
        let mut raw = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut raw)
            .expect("the operating system's random number generator works");
        let text = hex::encode(raw);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match file {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(create_err)?;
                f.write_all(b"\n").map_err(create_err)?;
                f.sync_all().map_err(create_err)?;
                Ok(Secret(text.into_bytes()))
            }
            // Another gateway created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
            Err(e) => Err(create_err(e)),
        }
    }

    /// A secret made in memory, for tests.
    pub fn from_bytes(bytes: &[u8]) -> Secret {
        Secret(bytes.to_vec())
    }

    /// A key for one purpose: HMAC-SHA256(secret, label). Different labels give unrelated keys.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The keys the gateway uses, each derived for its own purpose.
    pub fn keys(&self) -> Keys {
        let mut cookie = Vec::with_capacity(64);
        cookie.extend_from_slice(&self.derive("tether cookie signing"));
        cookie.extend_from_slice(&self.derive("tether cookie encryption"));
        Keys {
            cookie: cookie::Key::from(&cookie),
            bokeh: BokehKey(hex::encode(self.derive("tether bokeh session signing"))),
            session: self.derive("tether session ownership"),
            login: self.derive("tether login identity"),
        }
    }
}

/// The key handed to workers as `BOKEH_SECRET_KEY`. Bokeh uses its UTF-8 bytes as the HMAC key.
#[derive(Clone)]
pub struct BokehKey(String);

impl BokehKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BokehKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BokehKey(****)")
    }
}

/// Every key derived from the secret.
#[derive(Clone)]
pub struct Keys {
    /// Signs the `tether_id` cookie.
    pub cookie: cookie::Key,
    /// Signs Bokeh session ids and tokens; shared with the workers only.
    pub bokeh: BokehKey,
    /// Binds a session id to its (user, app), so ownership can be checked with no registry.
    pub session: [u8; 32],
    /// Turns a logged-in name (`--identity-header`) into the user id its state is kept under.
    pub login: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(****)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_with_mode_0600_and_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        let a = Secret::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            dir_mode & 0o777,
            0o700,
            "the directory tether made is private"
        );
        let b = Secret::load_or_create(&path).unwrap();
        assert_eq!(a.derive("x"), b.derive("x"));
        assert_ne!(a.derive("x"), a.derive("y"));
    }

    #[test]
    fn short_secret_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short").unwrap();
        let err = Secret::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }

    #[test]
    fn debug_is_masked() {
        let s = Secret::from_bytes(b"0123456789abcdef0123456789abcdef-visible");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert!(!format!("{:?}", s.keys().bokeh).contains('0'));
    }
}
