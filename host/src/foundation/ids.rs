//! Ids as they arrive in paths: checked before they reach SQL or logs.

use crate::foundation::error::{DomainError, DomainResult};

/// Longest id accepted in a path or cursor; generated ids are 32 characters.
pub const MAX_PATH_ID_LEN: usize = 100;

/// Rejects path ids that cannot be ids (before they reach SQL or logs).
pub fn check_path_id(kind: &str, id: &str) -> DomainResult<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_PATH_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::bad_request(
            "invalid_path",
            format!("{id:?} is not a valid {kind} id"),
        ))
    }
}
