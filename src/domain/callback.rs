//! The `callbackUrl` of a run or rerun body (contract, section 21), checked
//! before anything is written.

use crate::callbacks::{check_callback_url as check, AllowedHosts, CallbackUrlError};
use crate::error::ApiError;

/// Checks `url` (a body's `callbackUrl`, if any) against `allowed`
/// (`CALLBACK_ALLOWED_HOSTS`; empty: callbacks off, so any URL is refused).
///
/// Errors: 400 code 1001 for a URL that is not `http`/`https` or is longer
/// than 2048 characters; 400 code 1022 `callbackUrl host <h> is not
/// allowed` (section 21).
pub fn check_callback_url(url: Option<&str>, allowed: &AllowedHosts) -> Result<(), ApiError> {
    let Some(url) = url else {
        return Ok(());
    };
    match check(url, allowed) {
        Ok(_) => Ok(()),
        Err(CallbackUrlError::Invalid(why)) => {
            Err(ApiError::InvalidRequest(format!("callbackUrl {why}")))
        }
        Err(CallbackUrlError::HostNotAllowed(host)) => Err(ApiError::CallbackHostNotAllowed(host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_url_is_1001_when_malformed_and_1022_when_its_host_is_not_listed() {
        let allowed = AllowedHosts::parse("127.0.0.1").unwrap();
        assert!(check_callback_url(None, &allowed).is_ok());
        assert!(check_callback_url(Some("http://127.0.0.1:9/x"), &allowed).is_ok());
        let code = |url: &str, allowed: &AllowedHosts| {
            check_callback_url(Some(url), allowed).unwrap_err().code()
        };
        assert_eq!(code("ftp://127.0.0.1/", &allowed), 1001);
        assert_eq!(code("http://10.1.1.1/", &allowed), 1022);
        assert_eq!(code("http://127.0.0.1/", &AllowedHosts::default()), 1022);
        assert_eq!(
            check_callback_url(Some("http://evil.test/"), &allowed)
                .unwrap_err()
                .to_string(),
            "callbackUrl host evil.test is not allowed"
        );
    }
}
