//! Bearer-token authentication and the token checks of authorisation.
//!
//! Tokens are JWTs (contract, section 3): HS256 with `JWT_SECRET`, or RS256 /
//! ES256 with `JWT_PUBLIC_KEY_FILE` or `JWT_JWKS_FILE` (see [`keys`]); the
//! deployment's one algorithm is pinned, so a header naming another (`none`,
//! HS256 against a public key) is refused. `exp` and `sub` are required, `exp`
//! and `nbf` must be numbers (a string is refused: the type-confusion advisory
//! fixed in jsonwebtoken 10.3), `nbf` is honoured, with a leeway of
//! `JWT_LEEWAY_SECS`; `iss` and `aud` must match `JWT_ISSUER` and
//! `JWT_AUDIENCE` when those are set. `sub` is the user id (a decimal string,
//! a JSON number accepted) and `authorities` an array of strings. `PLAN_RUN`
//! is needed to rerun; `QUEUE_ADMIN` may act for another user. Every refusal
//! is 401 code 1009; tokens and their claims are never logged, only the
//! reason of a refusal.

pub mod keys;

use crate::config::TokenConfig;
use crate::error::ApiError;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, EncodingKey, Header, Validation};
use keys::VerifyingKeys;
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
    keys: VerifyingKeys,
    validation: Validation,
}

impl TokenVerifier {
    /// The verifier `serve` uses: the one key source of `config`
    /// ([`TokenConfig::key_source`]), `JWT_LEEWAY_SECS`, `JWT_ISSUER`, `JWT_AUDIENCE`.
    ///
    /// Errors (start-up): no or several key sources, an unreadable or unusable key file.
    pub fn from_config(config: &TokenConfig) -> anyhow::Result<Self> {
        let keys = VerifyingKeys::load(&config.key_source()?)?;
        let validation = validation(
            keys.algorithm(),
            config.leeway_secs,
            config.issuer.as_deref(),
            config.audience.as_deref(),
        );
        Ok(TokenVerifier { keys, validation })
    }

    /// A verifier of HS256 tokens signed with `secret`; `leeway_secs` of clock
    /// skew is allowed on `exp` and `nbf`; no `iss` or `aud` required.
    pub fn hs256(secret: &str, leeway_secs: u64) -> Self {
        let keys = VerifyingKeys::Fixed {
            key: std::sync::Arc::new(jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())),
            algorithm: Algorithm::HS256,
        };
        TokenVerifier {
            validation: validation(Algorithm::HS256, leeway_secs, None, None),
            keys,
        }
    }

    /// The one algorithm this deployment accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.keys.algorithm()
    }

    /// Authenticates the request whose headers are `headers`.
    ///
    /// Errors: 401 code 1009 when the `Authorization: Bearer` header is
    /// missing, malformed, over 8 KiB, badly signed, expired or not yet valid.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let mut values = headers.get_all(AUTHORIZATION);
        let Some(value) = values.next() else {
            return Err(ApiError::Unauthorized { token_sent: false });
        };
        let refused = ApiError::Unauthorized { token_sent: true };
        // two Authorization headers are ambiguous: neither is believed
        if values.next().is_some() || value.len() > MAX_TOKEN_BYTES + 7 {
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
        let refuse = |reason: &str| {
            log::debug!("bearer token refused: {reason}");
            ApiError::Unauthorized { token_sent: true }
        };
        let header = decode_header(token).map_err(|e| refuse(refusal_reason(&e)))?;
        let key = self
            .keys
            .key_for(header.kid.as_deref())
            .ok_or_else(|| refuse("no key of the token's kid"))?;
        let data = decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| refuse(refusal_reason(&e)))?;
        Ok(Caller {
            subject: data.claims.sub,
            authorities: data.claims.authorities,
        })
    }
}

/// The checks of every token: only `algorithm`, `exp` required, `nbf`
/// honoured, `leeway_secs` on both; `iss`/`aud` required and matched when
/// given. `sub` is required by [`Claims`] itself: jsonwebtoken's own check
/// would refuse the JSON number the contract accepts (section 3).
fn validation(
    algorithm: Algorithm,
    leeway_secs: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    let mut required = vec!["exp"];
    validation.leeway = leeway_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if let Some(audience) = audience {
        validation.set_audience(&[audience]);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Why a token was refused, in words that hold no part of the token.
fn refusal_reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidClaimFormat(_) => "exp or nbf is not a number",
        ErrorKind::Json(_) => "claims or header of the wrong shape",
        _ => "malformed token",
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
    let exp = now
        .checked_add(ttl_secs)
        .ok_or_else(|| anyhow::anyhow!("--ttl-secs {ttl_secs} is too large"))?;
    let claims = Claims {
        sub: user_id.to_string(),
        exp,
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

    fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap()
    }

    #[test]
    fn a_numeric_subject_is_accepted_and_a_missing_one_refused() {
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let verifier = TokenVerifier::hs256("s3cret", 0);
        let numeric =
            signed(serde_json::json!({"sub": 13, "exp": exp, "authorities": ["PLAN_RUN"]}));
        let caller = verifier.authenticate(&headers(&numeric)).unwrap();
        assert_eq!(caller.subject, "13");
        assert!(caller.authorize_rerun(13).is_ok());
        for claims in [
            serde_json::json!({"exp": exp, "authorities": ["PLAN_RUN"]}),
            serde_json::json!({"sub": null, "exp": exp}),
            serde_json::json!({"sub": [13], "exp": exp}),
        ] {
            assert!(
                verifier
                    .authenticate(&headers(&signed(claims.clone())))
                    .is_err(),
                "{claims}"
            );
        }
    }

    #[test]
    fn two_authorization_headers_are_refused_whatever_their_order() {
        let good = issue_token("s3cret", 13, &[PLAN_RUN.to_owned()], 60).unwrap();
        let mut both = headers(&good);
        both.append(AUTHORIZATION, HeaderValue::from_static("Bearer x.y.z"));
        assert!(matches!(
            TokenVerifier::hs256("s3cret", 0).authenticate(&both),
            Err(ApiError::Unauthorized { token_sent: true })
        ));
    }

    #[test]
    fn a_ttl_past_the_end_of_time_is_an_error_not_a_panic() {
        assert!(issue_token("s3cret", 13, &[], u64::MAX).is_err());
    }
}
