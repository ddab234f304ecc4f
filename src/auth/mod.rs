//! Bearer-token authentication and the token checks of authorisation.
//!
//! Tokens are JWTs (contract, section 3): HS256 with `JWT_SECRET`, or RS256 /
//! ES256 with `JWT_PUBLIC_KEY_FILE` or `JWT_JWKS_FILE` (see [`keys`]); the
//! deployment's one algorithm is pinned, so a header naming another (`none`,
//! HS256 against a public key) is refused. `exp` and `sub` are required.
//! `exp`, `nbf` and `iat` are NumericDates (RFC 7519, section 2): any finite
//! JSON number, fractional or negative included; a string is refused (the
//! type-confusion advisory fixed in jsonwebtoken 10.3). `exp` and `nbf` are
//! checked here, as sent, with a leeway of `JWT_LEEWAY_SECS`; `iat` is never
//! checked. `iss` and `aud` must match `JWT_ISSUER` and `JWT_AUDIENCE` when
//! those are set. `sub` is the user id (a decimal string, a JSON number
//! accepted) and `authorities` an array of strings; other claims are ignored.
//! `PLAN_RUN` is needed to rerun; `QUEUE_ADMIN` may act for another user.
//! Every refusal is 401 code 1009; tokens and their claims are never logged,
//! only the reason of a refusal.

pub mod keys;

use crate::config::TokenConfig;
use crate::error::ApiError;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, EncodingKey, Header, Validation};
use keys::VerifyingKeys;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};

/// Authority needed to rerun (contract, section 3).
pub const PLAN_RUN: &str = "PLAN_RUN";
/// Authority that may rerun on behalf of another `userId` (contract, section 3).
pub const QUEUE_ADMIN: &str = "QUEUE_ADMIN";
/// Authority that may read executions and results (contract, section 11);
/// `PLAN_RUN` and `QUEUE_ADMIN` may read too.
pub const PLAN_READ: &str = "PLAN_READ";
/// Authority that may write and read the catalogue (contract, section 20).
pub const CATALOG_WRITE: &str = "CATALOG_WRITE";
/// Longest bearer token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims plan-queue reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id as a decimal string (a JSON number is accepted on input).
    #[serde(deserialize_with = "string_or_number")]
    pub sub: String,
    /// Expiry (required): the token is refused from `exp` + leeway on.
    pub exp: NumericDate,
    /// Not before: the token is refused until `nbf` − leeway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// Issued at: read for its type only, never checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<NumericDate>,
    /// What the caller may do (`PLAN_RUN`, `QUEUE_ADMIN`); absent means nothing.
    #[serde(default)]
    pub authorities: Vec<String>,
}

/// A NumericDate (RFC 7519, section 2): seconds since the Unix epoch, "a JSON
/// numeric value" that may be non-integer or negative.
///
/// Reads any finite JSON number as is (no rounding); refuses strings, `null`
/// and every other JSON type. Written as a JSON integer when whole (what
/// `plan-queue token` issues), else as a fraction.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct NumericDate(pub f64);

impl NumericDate {
    /// Now, to the sub-second; before 1970 (a broken clock) is negative, not a panic.
    pub fn now() -> Self {
        NumericDate(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => since.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }
}

impl From<u64> for NumericDate {
    fn from(secs: u64) -> Self {
        NumericDate(secs as f64)
    }
}

/// Largest magnitude below which every whole f64 is an exact integer (2^53).
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

impl Serialize for NumericDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < EXACT_INTEGERS {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl Visitor<'_> for Number {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a NumericDate: a finite JSON number of seconds since 1970")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() {
                    Ok(NumericDate(v))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Number)
    }
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

    /// The checks of code 1010 that need only the token, for a run or a
    /// rerun (anything that queues): `PLAN_RUN`, and `sub` = `user_id`
    /// unless the caller holds `QUEUE_ADMIN`.
    pub fn authorize_queue(&self, user_id: i64) -> Result<(), ApiError> {
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

/// What a caller may read (contract, section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadScope {
    /// `QUEUE_ADMIN`: every plan and execution.
    Everything,
    /// Only plans of projects this user is a member of. `None` when the
    /// token's subject is not a user id: such a caller sees nothing.
    MemberOf(Option<i64>),
}

impl ReadScope {
    /// The member whose projects bound what is seen; `None` for
    /// [`ReadScope::Everything`]; `Some(0)` (no user) when the subject is not a user id.
    pub fn member(self) -> Option<i64> {
        match self {
            ReadScope::Everything => None,
            ReadScope::MemberOf(user) => Some(user.unwrap_or(0)),
        }
    }
}

impl Caller {
    /// The check of code 1010 for the read endpoints (contract, section 11):
    /// `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`. Answers what the caller may
    /// see: everything with `QUEUE_ADMIN`, else the plans of the projects the
    /// subject (a user id) is a member of.
    pub fn authorize_read(&self) -> Result<ReadScope, ApiError> {
        if self.has(QUEUE_ADMIN) {
            return Ok(ReadScope::Everything);
        }
        if !self.has(PLAN_RUN) && !self.has(PLAN_READ) {
            return Err(ApiError::AccessDenied(
                "the token lacks the PLAN_READ, PLAN_RUN or QUEUE_ADMIN authority".to_owned(),
            ));
        }
        // the subject as the rerun compares it: the user id's decimal text exactly
        let user = self
            .subject
            .parse::<i64>()
            .ok()
            .filter(|id| *id >= 1 && id.to_string() == self.subject);
        Ok(ReadScope::MemberOf(user))
    }
}

impl Caller {
    /// The check of code 1010 for the catalogue (contract, section 20):
    /// `CATALOG_WRITE`, for its reads as for its writes.
    pub fn authorize_catalog(&self) -> Result<(), ApiError> {
        if self.has(CATALOG_WRITE) {
            Ok(())
        } else {
            Err(ApiError::AccessDenied(
                "the token lacks the CATALOG_WRITE authority".to_owned(),
            ))
        }
    }
}

impl Caller {
    /// The check of code 1010 for a cancel (contract, section 16): `PLAN_RUN`
    /// (or `QUEUE_ADMIN`). Answers what the caller may cancel as
    /// [`Caller::authorize_read`] answers what it may see: everything with
    /// `QUEUE_ADMIN`, else the plans of the projects the subject is a member of.
    pub fn authorize_cancel(&self) -> Result<ReadScope, ApiError> {
        if !self.has(PLAN_RUN) && !self.has(QUEUE_ADMIN) {
            return Err(ApiError::AccessDenied(
                "the token lacks the PLAN_RUN authority".to_owned(),
            ));
        }
        self.authorize_read()
    }
}

/// Verifies bearer tokens of one deployment.
pub struct TokenVerifier {
    keys: VerifyingKeys,
    validation: Validation,
    leeway_secs: u64,
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
            config.issuer.as_deref(),
            config.audience.as_deref(),
        );
        Ok(TokenVerifier {
            keys,
            validation,
            leeway_secs: config.leeway_secs,
        })
    }

    /// A verifier of HS256 tokens signed with `secret`; `leeway_secs` of clock
    /// skew is allowed on `exp` and `nbf`; no `iss` or `aud` required.
    pub fn hs256(secret: &str, leeway_secs: u64) -> Self {
        let keys = VerifyingKeys::Fixed {
            key: std::sync::Arc::new(jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())),
            algorithm: Algorithm::HS256,
        };
        TokenVerifier {
            validation: validation(Algorithm::HS256, None, None),
            keys,
            leeway_secs,
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
        check_dates(&data.claims, NumericDate::now(), self.leeway_secs).map_err(refuse)?;
        // the subject scopes Idempotency-Keys, stored as PostgreSQL text,
        // which cannot hold U+0000: a subject with control characters names
        // nobody (it would otherwise fail the request with a 500)
        if data.claims.sub.is_empty() || data.claims.sub.chars().any(char::is_control) {
            return Err(refuse("sub is empty or holds a control character"));
        }
        Ok(Caller {
            subject: data.claims.sub,
            authorities: data.claims.authorities,
        })
    }
}

/// The checks jsonwebtoken makes on every token: only `algorithm`;
/// `iss`/`aud` required and matched when given. `exp` and `nbf` are left to
/// [`check_dates`] (jsonwebtoken reads them as `u64`, refusing a negative
/// NumericDate and rounding a fractional one in the caller's favour); `exp`
/// and `sub` are required by [`Claims`] itself (jsonwebtoken's `sub` check
/// would refuse the JSON number the contract accepts, section 3).
fn validation(algorithm: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    let mut required = vec![];
    validation.validate_exp = false;
    validation.validate_nbf = false;
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

/// The time checks of RFC 7519 (sections 4.1.4, 4.1.5) at `now`, with
/// `leeway_secs` of clock skew, on the values as sent: refused from
/// `exp` + leeway on, and before `nbf` − leeway. `iat` is not checked.
///
/// Errors: the reason of the refusal, `expired` or `not yet valid (nbf)`.
fn check_dates(claims: &Claims, now: NumericDate, leeway_secs: u64) -> Result<(), &'static str> {
    let leeway = leeway_secs as f64;
    if now.0 >= claims.exp.0 + leeway {
        return Err("expired");
    }
    if claims.nbf.is_some_and(|nbf| now.0 + leeway < nbf.0) {
        return Err("not yet valid (nbf)");
    }
    Ok(())
}

/// Why a token was refused, in words that hold no part of the token.
fn refusal_reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
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
        exp: exp.into(),
        nbf: None,
        iat: Some(now.into()),
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
        assert!(caller.authorize_queue(13).is_ok());
        assert_eq!(caller.authorize_queue(14).unwrap_err().code(), 1010);
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
        assert!(caller.authorize_queue(13).is_ok());
        for claims in [
            serde_json::json!({"exp": exp, "authorities": ["PLAN_RUN"]}),
            serde_json::json!({"sub": null, "exp": exp}),
            serde_json::json!({"sub": [13], "exp": exp}),
            serde_json::json!({"sub": "", "exp": exp, "authorities": ["QUEUE_ADMIN"]}),
            serde_json::json!({"sub": "svc\u{0}x", "exp": exp, "authorities": ["QUEUE_ADMIN"]}),
        ] {
            assert!(
                verifier
                    .authenticate(&headers(&signed(claims.clone())))
                    .is_err(),
                "{claims}"
            );
        }
    }

    /// Claims of a good token for user 13 with `PLAN_RUN`, with `extra` added.
    fn claims_with(extra: serde_json::Value) -> serde_json::Value {
        let mut claims = serde_json::json!({"sub": "13", "exp": jsonwebtoken::get_current_timestamp() + 600, "authorities": ["PLAN_RUN"]});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        claims
    }

    #[test]
    fn exp_nbf_and_iat_accept_integers_and_fractions_and_refuse_strings() {
        let t = jsonwebtoken::get_current_timestamp() as f64;
        let verifier = TokenVerifier::hs256("s3cret", 60);
        let accepted = [
            ("exp integer", serde_json::json!({"exp": t + 3600.0})),
            ("exp fraction", serde_json::json!({"exp": t + 3600.5})),
            ("exp past u64", serde_json::json!({"exp": 1e20})),
            ("nbf integer", serde_json::json!({"nbf": t - 10.0})),
            ("nbf fraction", serde_json::json!({"nbf": t - 0.25})),
            ("nbf negative", serde_json::json!({"nbf": -1.5})),
            ("iat integer", serde_json::json!({"iat": t})),
            ("iat fraction", serde_json::json!({"iat": t - 0.75})),
            ("iat negative", serde_json::json!({"iat": -1})),
            ("iat in the future", serde_json::json!({"iat": t + 1e6})),
            ("iat null", serde_json::json!({"iat": null})),
        ];
        for (what, extra) in accepted {
            let token = signed(claims_with(extra));
            assert!(verifier.authenticate(&headers(&token)).is_ok(), "{what}");
        }
        let refused = [
            (
                "exp string",
                serde_json::json!({"exp": (t + 3600.0).to_string()}),
            ),
            (
                "exp fraction string",
                serde_json::json!({"exp": "1796050919.5"}),
            ),
            ("exp null", serde_json::json!({"exp": null})),
            ("exp boolean", serde_json::json!({"exp": true})),
            ("nbf string", serde_json::json!({"nbf": "1"})),
            ("nbf array", serde_json::json!({"nbf": [1]})),
            ("iat string", serde_json::json!({"iat": t.to_string()})),
            (
                "iat fraction string",
                serde_json::json!({"iat": "1796047319.5"}),
            ),
            ("iat object", serde_json::json!({"iat": {}})),
        ];
        for (what, extra) in refused {
            let token = signed(claims_with(extra));
            assert!(verifier.authenticate(&headers(&token)).is_err(), "{what}");
        }
    }

    #[test]
    fn a_numeric_date_is_any_finite_json_number() {
        let read = |text: &str| serde_json::from_str::<NumericDate>(text).ok();
        assert_eq!(read("1796050919.5"), Some(NumericDate(1796050919.5)));
        assert_eq!(read("1796050919"), Some(NumericDate(1796050919.0)));
        assert_eq!(read("-2.5"), Some(NumericDate(-2.5)));
        assert_eq!(read("1.7e9"), Some(NumericDate(1.7e9)));
        for refused in ["1e400", "-1e400", "NaN", "Infinity", "\"1\"", "null", "[]"] {
            assert_eq!(read(refused), None, "{refused}");
        }
        // what `plan-queue token` writes stays a JSON integer
        assert_eq!(
            serde_json::json!(NumericDate(1796050919.0)),
            serde_json::json!(1796050919)
        );
        assert_eq!(serde_json::json!(NumericDate(0.5)), serde_json::json!(0.5));
    }

    #[test]
    fn exp_and_nbf_are_compared_as_sent_with_no_rounding_in_the_callers_favour() {
        let now = NumericDate(1_796_050_919.0);
        let at = |exp: f64, nbf: Option<f64>| Claims {
            sub: "13".to_owned(),
            exp: NumericDate(exp),
            nbf: nbf.map(NumericDate),
            iat: None,
            authorities: vec![],
        };
        let check = |claims: Claims| check_dates(&claims, now, 60);
        let t = now.0;
        assert_eq!(check(at(t - 60.5, None)), Err("expired"));
        assert_eq!(check(at(t - 60.0, None)), Err("expired"), "on exp + leeway");
        assert_eq!(check(at(t - 59.5, None)), Ok(()));
        assert_eq!(check(at(-1.0, None)), Err("expired"));
        assert_eq!(
            check(at(t + 1.0, Some(t + 60.5))),
            Err("not yet valid (nbf)")
        );
        assert_eq!(check(at(t + 1.0, Some(t + 60.0))), Ok(()));
        assert_eq!(check(at(t + 1.0, Some(-1.0))), Ok(()));
        // through the verifier, with the clock: half a second past exp + leeway
        let clock = jsonwebtoken::get_current_timestamp() as f64;
        let late = signed(claims_with(serde_json::json!({"exp": clock - 60.5})));
        assert!(TokenVerifier::hs256("s3cret", 60)
            .authenticate(&headers(&late))
            .is_err());
    }

    #[test]
    fn unknown_claims_of_any_type_are_ignored() {
        let token = signed(claims_with(serde_json::json!({
            "jti": 7, "scope": "a b", "auth_time": 1796047319.5, "azp": null,
            "cnf": {"jkt": "x"}, "roles": [1, "two"], "iss": 42
        })));
        let caller = TokenVerifier::hs256("s3cret", 0)
            .authenticate(&headers(&token))
            .unwrap();
        assert_eq!(caller.subject, "13");
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

    fn caller(subject: &str, authorities: &[&str]) -> Caller {
        Caller {
            subject: subject.to_owned(),
            authorities: authorities.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn reading_needs_plan_read_plan_run_or_queue_admin() {
        assert_eq!(
            caller("13", &[PLAN_READ]).authorize_read().unwrap(),
            ReadScope::MemberOf(Some(13))
        );
        assert_eq!(
            caller("13", &[PLAN_RUN]).authorize_read().unwrap(),
            ReadScope::MemberOf(Some(13))
        );
        assert_eq!(
            caller("scheduler", &[QUEUE_ADMIN])
                .authorize_read()
                .unwrap(),
            ReadScope::Everything
        );
        let denied = caller("13", &["SOMETHING_ELSE"])
            .authorize_read()
            .unwrap_err();
        assert_eq!(denied.code(), 1010);
    }

    #[test]
    fn a_subject_that_is_not_a_user_id_reads_nothing_without_queue_admin() {
        for subject in ["scheduler", "+13", "013", "0", "-4"] {
            let scope = caller(subject, &[PLAN_READ]).authorize_read().unwrap();
            assert_eq!(scope, ReadScope::MemberOf(None), "{subject}");
            assert_eq!(scope.member(), Some(0));
        }
    }
}
