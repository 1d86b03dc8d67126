//! Secret files: created with mode 0600, refused when anyone but the owner
//! may read them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600, replacing the file atomically.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp");
    // A leftover temporary file (or a link planted there) is removed, and the
    // new one is created exclusively, so its mode is ours and no link is followed.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Fails unless only the owner may read or write `path`.
pub(crate) fn check_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::LoosePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file, refusing one other users can read.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    check_private(path)?;
    Ok(Zeroizing::new(fs::read(path).map_err(io_err(path))?))
}

/// Reads a `len`-byte random secret from `path`, creating it (0600) on
/// first use. Refuses a file other users can read.
pub fn load_or_create_secret(path: &Path, len: usize) -> Result<Zeroizing<Vec<u8>>> {
    if path.exists() {
        check_private(path)?;
        let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
        if bytes.len() != len {
            return Err(CryptoError::Invalid {
                path: path.display().to_string(),
                reason: format!("expected {len} bytes, found {}", bytes.len()),
            });
        }
        return Ok(bytes);
    }
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    write_private_file(path, &bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/hash.key");
        let a = load_or_create_secret(&p, 32).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(*a, *load_or_create_secret(&p, 32).unwrap());
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        load_or_create_secret(&p, 32).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_secret(&p, 32).unwrap_err();
        assert!(matches!(
            err,
            CryptoError::LoosePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_private_file(&p, b"short").unwrap();
        assert!(matches!(
            load_or_create_secret(&p, 32),
            Err(CryptoError::Invalid { .. })
        ));
    }
}
