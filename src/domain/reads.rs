//! The inputs of the read endpoints (contract, sections 11, 19 and 22): ids
//! in the path, the page asked of `GET /plans/{planId}/executions`, the
//! `attempts` of `GET /plans/{planId}/results`, and the entity tags of
//! `ETag` / `If-None-Match`.

use super::Id;
use crate::error::ApiError;

/// Executions per page when `limit` is not given (contract, section 11).
pub const DEFAULT_PAGE_LIMIT: i64 = 20;
/// Largest `limit` (contract, section 11).
pub const MAX_PAGE_LIMIT: i64 = 100;

/// An id in a path: decimal digits only, from 1 to 2^63 − 1. `None` for
/// anything else (a sign, a space, 0, too large), which the read endpoints
/// answer as an unknown route (404 code 1001, contract section 11).
pub fn parse_path_id(text: &str) -> Option<Id> {
    decimal(text).and_then(Id::new)
}

/// `text` as a non-negative decimal integer without sign or spaces.
fn decimal(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One page of a plan's executions, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Executions on the page: 1 to [`MAX_PAGE_LIMIT`].
    pub limit: i64,
    /// The page starts after this execution (in newest-first order); it must
    /// be an execution of the plan, which the read service checks (1001).
    pub before: Option<Id>,
}

/// Parses the query string of `GET /plans/{planId}/executions`: `limit`
/// (1–100, default 20) and `before` (an execution id), each at most once.
///
/// Errors: 400 code 1001 naming the parameter for a value out of range or
/// not a decimal integer, a parameter given twice, or any other parameter
/// (an ignored parameter would silently answer another page than asked).
pub fn parse_page_query(query: &str) -> Result<PageRequest, ApiError> {
    let mut limit = None;
    let mut before = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "limit" => &mut limit,
            "before" => &mut before,
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter `{other}`, expected `limit` or `before`"
                )))
            }
        };
        if slot.is_some() {
            return Err(ApiError::InvalidRequest(format!(
                "query parameter `{name}` given more than once"
            )));
        }
        *slot = Some(value.into_owned());
    }
    let limit = match limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => decimal(&text)
            .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "limit must be an integer from 1 to {MAX_PAGE_LIMIT}, got `{text}`"
                ))
            })?,
    };
    let before = before
        .map(|text| {
            parse_path_id(&text).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "before must be an execution id (an integer from 1 to {}), got `{text}`",
                    i64::MAX
                ))
            })
        })
        .transpose()?;
    Ok(PageRequest { limit, before })
}

/// Full runs `GET /plans/{planId}/flakiness` looks at when `runs` is not
/// given (contract, section 19).
pub const DEFAULT_FLAKINESS_RUNS: i64 = 20;
/// Largest `runs` (contract, section 19).
pub const MAX_FLAKINESS_RUNS: i64 = 100;

/// Parses the query string of `GET /plans/{planId}/flakiness`: `runs`
/// (1–100, default 20), at most once.
///
/// Errors: 400 code 1001 naming the parameter for a value out of range or
/// not a decimal integer, `runs` given twice, or any other parameter.
pub fn parse_flakiness_query(query: &str) -> Result<i64, ApiError> {
    let mut runs = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "runs" {
            return Err(ApiError::InvalidRequest(format!(
                "unknown query parameter `{name}`, expected `runs`"
            )));
        }
        if runs.replace(value.into_owned()).is_some() {
            return Err(ApiError::InvalidRequest(
                "query parameter `runs` given more than once".to_owned(),
            ));
        }
    }
    match runs {
        None => Ok(DEFAULT_FLAKINESS_RUNS),
        Some(text) => decimal(&text)
            .filter(|n| (1..=MAX_FLAKINESS_RUNS).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "runs must be an integer from 1 to {MAX_FLAKINESS_RUNS}, got `{text}`"
                ))
            }),
    }
}

/// How `GET /plans/{planId}/results` gives each pair's attempts (contract,
/// section 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptsView {
    /// `attempts=all`, the default: every attempt, as section 11 answers.
    All,
    /// `attempts=none`: `attemptCount` instead of the `attempts` array.
    None,
}

impl AttemptsView {
    /// The parameter's value: `all` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptsView::All => "all",
            AttemptsView::None => "none",
        }
    }
}

/// Parses the query string of `GET /plans/{planId}/results`: `attempts`
/// (`all`, the default, or `none`; contract, section 22), at most once.
///
/// Errors: 400 code 1001 for another value, `attempts` given twice, or any
/// other parameter.
pub fn parse_results_query(query: &str) -> Result<AttemptsView, ApiError> {
    let mut attempts = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "attempts" {
            return Err(ApiError::InvalidRequest(format!(
                "unknown query parameter `{name}`, expected `attempts`"
            )));
        }
        if attempts.replace(value.into_owned()).is_some() {
            return Err(ApiError::InvalidRequest(
                "query parameter `attempts` given more than once".to_owned(),
            ));
        }
    }
    match attempts.as_deref() {
        None | Some("all") => Ok(AttemptsView::All),
        Some("none") => Ok(AttemptsView::None),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "attempts must be `all` or `none`, got `{other}`"
        ))),
    }
}

/// The entity tag of a read's answer (contract, section 22), without its
/// double quotes: what is read (`key`: the kind of read, its id and its
/// query parameters), the plan's `results_version` and `catalog_version`
/// (which grow with every change of the answer) and whose answer it is
/// (`a` for a `QUEUE_ADMIN`, `m<user>` for a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadTag(String);

impl ReadTag {
    /// The tag of the read `key` at the plan's versions, for `member`
    /// (`None`: `QUEUE_ADMIN`).
    pub fn new(key: &str, results_version: i64, catalog_version: i64, member: Option<i64>) -> Self {
        let viewer = member.map_or_else(|| "a".to_owned(), |m| format!("m{m}"));
        ReadTag(format!(
            "{key}.{results_version}.{catalog_version}.{viewer}"
        ))
    }

    /// The opaque tag, without double quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The tags of a request's `If-None-Match` (RFC 9110, section 13.1.2):
/// none, `*`, or a list, compared weakly (a `W/` prefix is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KnownTags {
    /// No `If-None-Match`: the read always answers 200.
    #[default]
    Nothing,
    /// `*`: any current answer matches.
    Any,
    /// The opaque tags, without quotes.
    Tags(Vec<String>),
}

impl KnownTags {
    /// True when the request has any tag to compare.
    pub fn is_empty(&self) -> bool {
        matches!(self, KnownTags::Nothing)
    }

    /// True when `tag` is among the request's tags: the answer is 304.
    pub fn includes(&self, tag: &str) -> bool {
        match self {
            KnownTags::Nothing => false,
            KnownTags::Any => true,
            KnownTags::Tags(tags) => tags.iter().any(|t| t == tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_positive_decimal_integers() {
        assert_eq!(parse_path_id("4980").map(Id::get), Some(4980));
        assert_eq!(parse_path_id("0004980").map(Id::get), Some(4980));
        for bad in [
            "",
            "0",
            "-1",
            "+5",
            " 5",
            "5 ",
            "1e3",
            "4.0",
            "abc",
            "9223372036854775808",
        ] {
            assert_eq!(parse_path_id(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_path_id("9223372036854775807").map(Id::get),
            Some(i64::MAX)
        );
    }

    #[test]
    fn a_page_defaults_to_twenty_from_the_newest() {
        assert_eq!(
            parse_page_query("").unwrap(),
            PageRequest {
                limit: 20,
                before: None
            }
        );
        let page = parse_page_query("limit=100&before=4980").unwrap();
        assert_eq!((page.limit, page.before.map(Id::get)), (100, Some(4980)));
    }

    #[test]
    fn flakiness_looks_at_twenty_runs_unless_told_from_1_to_100() {
        assert_eq!(parse_flakiness_query("").unwrap(), 20);
        assert_eq!(parse_flakiness_query("runs=1").unwrap(), 1);
        assert_eq!(parse_flakiness_query("runs=100").unwrap(), 100);
        for (query, needle) in [
            ("runs=0", "runs must be an integer from 1 to 100, got `0`"),
            ("runs=101", "runs must be"),
            ("runs=-3", "runs must be"),
            ("runs=", "runs must be"),
            ("runs=1&runs=2", "`runs` given more than once"),
            ("limit=5", "unknown query parameter `limit`"),
        ] {
            let err = parse_flakiness_query(query).unwrap_err();
            assert_eq!(err.code(), 1001, "{query}");
            assert!(err.to_string().contains(needle), "{query}: {err}");
        }
    }

    #[test]
    fn a_bad_page_query_is_code_1001_naming_the_parameter() {
        for (query, needle) in [
            ("limit=0", "limit must be"),
            ("limit=101", "limit must be"),
            ("limit=", "limit must be"),
            ("limit=ten", "limit must be"),
            ("limit=-1", "limit must be"),
            ("before=0", "before must be"),
            ("before=x", "before must be"),
            ("limit=5&limit=6", "`limit` given more than once"),
            ("page=2", "unknown query parameter `page`"),
        ] {
            let err = parse_page_query(query).unwrap_err();
            assert_eq!(err.code(), 1001, "{query}");
            assert!(err.to_string().contains(needle), "{query}: {err}");
        }
    }
}

#[cfg(test)]
mod read_tag_tests {
    use super::*;

    #[test]
    fn results_give_every_attempt_unless_told_none() {
        assert_eq!(parse_results_query("").unwrap(), AttemptsView::All);
        assert_eq!(
            parse_results_query("attempts=all").unwrap(),
            AttemptsView::All
        );
        assert_eq!(
            parse_results_query("attempts=none").unwrap(),
            AttemptsView::None
        );
        for (query, needle) in [
            (
                "attempts=some",
                "attempts must be `all` or `none`, got `some`",
            ),
            ("attempts=", "attempts must be"),
            (
                "attempts=all&attempts=none",
                "`attempts` given more than once",
            ),
            ("runs=5", "unknown query parameter `runs`"),
        ] {
            let err = parse_results_query(query).unwrap_err();
            assert_eq!(err.code(), 1001, "{query}");
            assert!(err.to_string().contains(needle), "{query}: {err}");
        }
    }

    #[test]
    fn a_tag_differs_by_read_version_and_viewer() {
        let tag = ReadTag::new("r614.all", 7, 2, Some(13));
        assert_eq!(tag.as_str(), "r614.all.7.2.m13");
        assert_ne!(tag, ReadTag::new("r614.all", 8, 2, Some(13)));
        assert_ne!(tag, ReadTag::new("r614.all", 7, 3, Some(13)));
        assert_ne!(tag, ReadTag::new("r614.all", 7, 2, None));
        assert_ne!(tag, ReadTag::new("r614.none", 7, 2, Some(13)));
        assert!(KnownTags::Tags(vec!["x".into(), tag.as_str().into()]).includes(tag.as_str()));
        assert!(KnownTags::Any.includes(tag.as_str()));
        assert!(!KnownTags::Nothing.includes(tag.as_str()));
    }
}
