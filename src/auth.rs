//! Bearer-token authentication and the token checks of authorisation.
//!
//! Tokens are JWTs (contract, section 3): HS256 with `JWT_SECRET`, `exp`
//! required, `nbf` honoured, a leeway of `JWT_LEEWAY_SECS`; `sub` is the user
//! id (a decimal string, a JSON number accepted) and `authorities` an array of
//! strings. `PLAN_RUN` is needed to rerun; `QUEUE_ADMIN` may act for another
//! user. Every refusal is 401 code 1009; tokens are never logged.

use crate::error::ApiError;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

/// Authority needed to rerun (contract, section 3).
pub const PLAN_RUN: &str = "PLAN_RUN";
/// Authority that may rerun on behalf of another `userId` (contract, section 3).
pub const QUEUE_ADMIN: &str = "QUEUE_ADMIN";
/// Longest bearer token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims plan-queue reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id as a decimal string (a JSON number is accepted on input).
    #[serde(deserialize_with = "string_or_number")]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub authorities: Vec<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        Text(String),
        Number(u64),
    }
    Ok(match Sub::deserialize(d)? {
        Sub::Text(s) => s,
        Sub::Number(n) => n.to_string(),
    })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub`, the scope of Idempotency-Keys.
    pub subject: String,
    pub authorities: Vec<String>,
}

impl Caller {
    fn has(&self, authority: &str) -> bool {
        self.authorities.iter().any(|a| a == authority)
    }

    /// The checks of code 1010 that need only the token: `PLAN_RUN`, and
    /// `sub` = `user_id` unless the caller holds `QUEUE_ADMIN`.
    pub fn authorize_rerun(&self, user_id: i64) -> Result<(), ApiError> {
        if !self.has(PLAN_RUN) {
            return Err(ApiError::AccessDenied(
                "the token lacks the PLAN_RUN authority".to_owned(),
            ));
        }
        if self.subject != user_id.to_string() && !self.has(QUEUE_ADMIN) {
            return Err(ApiError::AccessDenied(format!(
                "the token's subject may not rerun as user {user_id} without QUEUE_ADMIN"
            )));
        }
        Ok(())
    }
}

/// Verifies bearer tokens of one deployment.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier of HS256 tokens signed with `secret`; `leeway_secs` of clock
    /// skew is allowed on `exp` and `nbf`.
    pub fn hs256(secret: &str, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway_secs;
        validation.validate_nbf = true;
        TokenVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Authenticates the request whose headers are `headers`.
    ///
    /// Errors: 401 code 1009 when the `Authorization: Bearer` header is
    /// missing, malformed, over 8 KiB, badly signed, expired or not yet valid.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::Unauthorized { token_sent: false });
        };
        let refused = ApiError::Unauthorized { token_sent: true };
        if value.len() > MAX_TOKEN_BYTES + 7 {
            return Err(refused);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized { token_sent: true })?;
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            log::debug!("bearer token refused: {e}");
            refused
        })?;
        Ok(Caller {
            subject: data.claims.sub,
            authorities: data.claims.authorities,
        })
    }
}

/// Signs an HS256 token for `user_id` with `authorities`, valid `ttl_secs`
/// from now; what `plan-queue token` prints.
pub fn issue_token(
    secret: &str,
    user_id: i64,
    authorities: &[String],
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user_id.to_string(),
        exp: now + ttl_secs,
        iat: Some(now),
        authorities: authorities.to_vec(),
    };
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn an_issued_token_is_accepted() {
        let token = issue_token("s3cret", 13, &[PLAN_RUN.to_owned()], 60).unwrap();
        let caller = TokenVerifier::hs256("s3cret", 0)
            .authenticate(&headers(&token))
            .unwrap();
        assert_eq!(caller.subject, "13");
        assert!(caller.authorize_rerun(13).is_ok());
        assert_eq!(caller.authorize_rerun(14).unwrap_err().code(), 1010);
    }

    #[test]
    fn a_token_of_another_key_or_none_is_refused() {
        let token = issue_token("other", 13, &[], 60).unwrap();
        let verifier = TokenVerifier::hs256("s3cret", 0);
        assert!(matches!(
            verifier.authenticate(&headers(&token)),
            Err(ApiError::Unauthorized { token_sent: true })
        ));
        assert!(matches!(
            verifier.authenticate(&HeaderMap::new()),
            Err(ApiError::Unauthorized { token_sent: false })
        ));
    }

    #[test]
    fn a_numeric_subject_is_accepted() {
        let claims: Claims =
            serde_json::from_str(r#"{"sub":13,"exp":1,"authorities":["PLAN_RUN"]}"#).unwrap();
        assert_eq!(claims.sub, "13");
    }
}
