//! The deliverer of `serve` (contract, section 21): sends the due rows of
//! `callback_deliveries` and records each attempt.
//!
//! A round claims as many due rows as there are free slots
//! ([`MAX_IN_FLIGHT`]) with `FOR UPDATE SKIP LOCKED` and a lease, on the
//! deliverer's own small pool; each delivery is then sent outside any
//! transaction in a task of its own, holding one slot, so a slow receiver
//! occupies one slot and never the relay, the results consumer or other
//! deliveries. Rows live in the database: a restart (or a crash, once the
//! lease is over) takes them up again with the same `X-PlanQueue-Delivery`.
//!
//! Security: the URL's host is checked against `CALLBACK_ALLOWED_HOSTS`
//! again, resolved here, every resolved address checked, and the request
//! pinned to the checked address (reqwest's `resolve`), so a DNS answer that
//! changes between the check and the connection cannot send it elsewhere; no
//! redirect is followed, no proxy used, the answer read up to
//! [`MAX_ANSWER_BYTES`]. The secret never reaches a log line.

use super::{retry_delay, signature, AllowedHosts};
use crate::db::callbacks::{self, Attempt, DueDelivery, Settled};
use crate::db::{Db, DbUnavailable};
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use url::{Host, Url};

/// Deliveries sent at once by one instance.
pub const MAX_IN_FLIGHT: usize = 8;
/// A receiver has this long to answer 2xx (section 21).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of an answer is read.
pub const MAX_ANSWER_BYTES: usize = 4096;
/// Time between two claims when nothing was due.
const POLL: Duration = Duration::from_millis(250);
/// A claimed row's lease: longer than an attempt, so one deliverer holds it.
const LEASE_MS: i64 = 60_000;

/// What every delivery needs.
struct Shared {
    db: Db,
    hosts: AllowedHosts,
    secret: Vec<u8>,
    retry_for_secs: i64,
    metrics: Arc<Metrics>,
}

/// The deliverer task (contract, section 21).
pub struct Deliverer {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

impl Deliverer {
    /// `db` is the deliverer's own small pool; `hosts` and `secret` are
    /// `CALLBACK_ALLOWED_HOSTS` and `CALLBACK_SECRET`; a failed delivery is
    /// tried again for `retry_for` (`CALLBACK_RETRY_SECS`) after its first
    /// attempt; it stops when `shutdown` turns true.
    pub fn new(
        db: Db,
        hosts: AllowedHosts,
        secret: &str,
        retry_for: Duration,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Deliverer {
            shared: Arc::new(Shared {
                db,
                hosts,
                secret: secret.as_bytes().to_vec(),
                retry_for_secs: i64::try_from(retry_for.as_secs()).unwrap_or(i64::MAX),
                metrics,
            }),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            shutdown,
        }
    }

    /// Claims and sends until shutdown. A failed claim (the database
    /// unavailable) is logged and tried again.
    pub async fn run(mut self) {
        loop {
            let free = self.slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(due) => {
                        claimed = due.len();
                        for delivery in due {
                            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let shared = self.shared.clone();
                            tokio::spawn(async move {
                                shared.deliver(delivery).await;
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => log::warn!("callbacks: claim failed, retrying: {e:#}"),
                }
            }
            if claimed == 0 || claimed < free {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = self.shutdown.changed() => {}
                }
            } else {
                // every slot busy: wait for one
                tokio::select! {
                    _ = self.slots.acquire() => {}
                    _ = self.shutdown.changed() => {}
                }
            }
            if *self.shutdown.borrow() {
                break;
            }
        }
        log::info!("callback deliverer stopped");
    }

    async fn claim(&self, free: usize) -> anyhow::Result<Vec<DueDelivery>> {
        let limit = i64::try_from(free).unwrap_or(1);
        self.shared
            .db
            .run(move |conn| callbacks::claim(conn, limit, LEASE_MS).map_err(anyhow::Error::from))
            .await
    }
}

impl Shared {
    /// One attempt of `delivery`, then its settlement.
    async fn deliver(&self, delivery: DueDelivery) {
        let attempt = self.send(&delivery).await;
        let jitter = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
        let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
        let retry_in = retry_delay(attempts, jitter);
        let retry_in_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
        let event_id = delivery.event_id;
        let retry_for = self.retry_for_secs;
        let logged = attempt.clone();
        let settled: Result<Option<Settled>, SettleError> = self
            .db
            .run(move |conn| {
                callbacks::settle(conn, event_id, &attempt, retry_in_ms, retry_for)
                    .map_err(|e| SettleError(e.into()))
            })
            .await;
        match settled {
            Ok(Some(Settled::Delivered)) => self.metrics.callback("delivered"),
            Ok(Some(Settled::Retried)) => {
                self.metrics.callback("retried");
                log::info!(
                    "callback {event_id}: attempt {attempts} failed ({}), trying again in {retry_in:?}",
                    logged.error.as_deref().unwrap_or("")
                );
            }
            Ok(Some(Settled::GivenUp)) => {
                self.metrics.callback("given_up");
                log::warn!(
                    "callback {event_id}: given up after {attempts} attempts ({})",
                    logged.error.as_deref().unwrap_or("")
                );
            }
            Ok(None) => {}
            // the lease ends and the row is claimed again
            Err(e) => log::warn!("callback {event_id}: attempt not recorded: {:#}", e.0),
        }
    }

    /// POSTs the delivery once: delivered on a 2xx within
    /// [`ATTEMPT_TIMEOUT`], else the status or error that failed it.
    async fn send(&self, delivery: &DueDelivery) -> Attempt {
        let failed = |status: Option<i32>, error: String| Attempt {
            status,
            error: Some(error),
        };
        let url = match Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(e) => return failed(None, format!("not a URL: {e}")),
        };
        let client = match self.pinned_client(&url).await {
            Ok(client) => client,
            Err(e) => return failed(None, e),
        };
        let request = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-PlanQueue-Event", "execution.finished")
            .header("X-PlanQueue-Delivery", delivery.event_id.to_string())
            .header(
                "X-PlanQueue-Signature",
                signature(&self.secret, delivery.body.as_bytes()),
            )
            .body(delivery.body.clone());
        let answered = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut read = 0;
            while read < MAX_ANSWER_BYTES {
                match response.chunk().await? {
                    Some(chunk) => read += chunk.len(),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>(status)
        })
        .await;
        match answered {
            Err(_) => failed(None, format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            Ok(Err(e)) => failed(None, describe(e)),
            Ok(Ok(status)) if status.is_success() => Attempt {
                status: Some(i32::from(status.as_u16())),
                error: None,
            },
            Ok(Ok(status)) => failed(
                Some(i32::from(status.as_u16())),
                format!("answered {status}"),
            ),
        }
    }

    /// A client that connects only to an address of `url`'s host that
    /// `CALLBACK_ALLOWED_HOSTS` allows, resolved now: no redirect, no
    /// proxy, [`ATTEMPT_TIMEOUT`].
    async fn pinned_client(&self, url: &Url) -> Result<reqwest::Client, String> {
        let host = url.host().ok_or("the URL has no host")?;
        if !self.hosts.allows(&host) {
            return Err(format!("host {host} is not allowed"));
        }
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT);
        let builder = match host {
            Host::Domain(name) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|e| format!("cannot resolve {name}: {e}"))?
                    .collect();
                let Some(first) = addresses.first() else {
                    return Err(format!("{name} resolves to no address"));
                };
                if let Some(refused) = addresses
                    .iter()
                    .find(|a| !self.hosts.allows_resolved(name, a.ip()))
                {
                    return Err(format!("{name} resolves to {}, not allowed", refused.ip()));
                }
                builder.resolve(name, *first)
            }
            // an IP literal, allowed above: nothing to resolve
            Host::Ipv4(_) | Host::Ipv6(_) => builder,
        };
        builder.build().map_err(|e| format!("client: {e}"))
    }
}

/// A settlement that could not be written.
struct SettleError(anyhow::Error);

impl From<DbUnavailable> for SettleError {
    fn from(e: DbUnavailable) -> Self {
        SettleError(e.into())
    }
}

impl From<anyhow::Error> for SettleError {
    fn from(e: anyhow::Error) -> Self {
        SettleError(e)
    }
}

/// A reqwest error with its causes (so a TLS failure reads e.g. `... invalid
/// peer certificate: UnknownIssuer`), without the URL's query (which may
/// carry a receiver's own token).
fn describe(error: reqwest::Error) -> String {
    let (connect, timeout) = (error.is_connect(), error.is_timeout());
    if timeout {
        return format!("no answer within {ATTEMPT_TIMEOUT:?}");
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    if connect {
        format!("connection failed: {text}")
    } else {
        text
    }
}
