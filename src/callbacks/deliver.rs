//! The deliverer of `serve` (contract, section 21): sends the due rows of
//! `callback_deliveries` and records each attempt.
//!
//! One loop keeps at most [`MAX_IN_FLIGHT`] deliveries sending, each in a
//! task of its own outside any transaction, holding one slot, so a slow
//! receiver occupies one slot and never the relay, the results consumer or
//! other deliveries. Beside them, one round at a time settles the attempts
//! that ended since the last round and claims due rows for the free slots
//! and some to wait for one ([`MAX_CLAIMED`] in all; `FOR UPDATE SKIP
//! LOCKED` and a lease), in one statement on the deliverer's own pool: the
//! rows cost a statement per round, not two per delivery, and a slot that
//! frees up takes a waiting row at once. Rows live in the database: a
//! restart (or a crash, once the lease is over) takes them up again with the
//! same `X-PlanQueue-Delivery`. The pool commits without waiting for the WAL
//! flush: a claim or settlement lost in a PostgreSQL crash only sends a
//! delivery again, with the same `X-PlanQueue-Delivery`.
//!
//! One HTTP client serves every delivery, so connections to a receiver are
//! kept alive and reused. Security: the URL's host is checked against
//! `CALLBACK_ALLOWED_HOSTS` again before each send (an IP literal is never
//! resolved), and the client resolves host names only through
//! [`CheckedResolver`], which drops every address of an answer that is not
//! allowed ([`AllowedHosts::allows_resolved`]: no special-purpose address
//! such as 127.0.0.1 or 169.254.169.254 unless listed) and refuses a name
//! with none left: every new connection goes to an address checked when it
//! was opened, also after DNS answers change, and a pooled connection is
//! one of those. No redirect is followed, no proxy used. The 2xx decides: the
//! answer's body, read up to [`MAX_ANSWER_BYTES`] for at most
//! [`ANSWER_BODY_TIMEOUT`] so the connection can be reused, never fails a
//! delivery. The secret never reaches a log line.

use super::{retry_delay, signature, AllowedHosts};
use crate::db::callbacks::{self, Attempt, DueDelivery, Settled, SettledDelivery, Tried};
use crate::db::Db;
use crate::metrics::Metrics;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use url::{Host, Url};

/// Deliveries sent at once by one instance.
pub const MAX_IN_FLIGHT: usize = 8;
/// A receiver has this long to answer 2xx (section 21): connection, request
/// and the answer's status line and headers.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of an answer's body is read.
pub const MAX_ANSWER_BYTES: usize = 4096;
/// After the status, the body gets this long (its bytes are read only so
/// that the connection can be reused; a slow body does not fail a 2xx).
pub const ANSWER_BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// Time between two claims when nothing was due.
const POLL: Duration = Duration::from_millis(250);
/// A claimed row's lease: longer than an attempt, so one deliverer holds it.
const LEASE_MS: i64 = 60_000;
/// Rows one instance holds claimed at once: sending, or waiting for a slot.
/// A waiting row starts within `MAX_CLAIMED / MAX_IN_FLIGHT` attempts of
/// [`ATTEMPT_TIMEOUT`] (30 s), well inside its lease; more rows per claim
/// means fewer statements per delivery.
pub const MAX_CLAIMED: usize = 4 * MAX_IN_FLIGHT;
const _: () = assert!(
    ((MAX_CLAIMED / MAX_IN_FLIGHT) as u64) * ATTEMPT_TIMEOUT.as_secs() * 1000 < LEASE_MS as u64
);
/// How long an idle kept-alive connection to a receiver stays in the pool.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// The host-name resolver of the deliverer's HTTP client: resolves with the
/// system resolver and answers with the addresses allowed for the name by
/// `CALLBACK_ALLOWED_HOSTS` ([`AllowedHosts::allows_resolved`]), refusing
/// the name when none is; a name that is not allowed is not even resolved.
/// The client calls it for every new connection to a host name, never for
/// an IP literal.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    hosts: AllowedHosts,
    /// The answer of every name in place of the system resolver's (tests).
    fixed: Option<Vec<IpAddr>>,
}

impl CheckedResolver {
    /// A resolver that allows what `hosts` allows.
    pub fn new(hosts: AllowedHosts) -> Self {
        CheckedResolver { hosts, fixed: None }
    }

    /// The allowed addresses of `name` now (port 0), at least one.
    ///
    /// Errors, as text: the name is not allowed, does not resolve, resolves
    /// to nothing, or resolves only to addresses that are not allowed (each
    /// named with why).
    pub async fn addresses(&self, name: &str) -> Result<Vec<SocketAddr>, String> {
        if !self.hosts.allows(&Host::Domain(name)) {
            return Err(format!("host {name} is not allowed"));
        }
        let addresses: Vec<SocketAddr> = match &self.fixed {
            Some(fixed) => fixed.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
            None => tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(format!("{name} resolves to no address"));
        }
        let mut refused = Vec::new();
        let allowed: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|a| match self.hosts.allows_resolved(name, a.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refused.push(why);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(format!(
                "{name} resolves to no allowed address: {}",
                refused.join("; ")
            ));
        }
        Ok(allowed)
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = resolver.addresses(name.as_str()).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The HTTP side of every delivery: the one client and what signs.
struct Sender {
    client: reqwest::Client,
    hosts: AllowedHosts,
    secret: Vec<u8>,
}

/// The one HTTP client of the deliverer: host names resolved only through
/// [`CheckedResolver`] for `hosts`, no redirect, no proxy, kept-alive
/// connections (at most [`MAX_IN_FLIGHT`] idle per receiver). No timeout of
/// its own: [`Sender::send`] bounds the status and the body apart.
///
/// Errors: reqwest cannot build it (its TLS configuration).
fn client(hosts: &AllowedHosts) -> reqwest::Result<reqwest::Client> {
    client_resolving(CheckedResolver::new(hosts.clone()))
}

/// [`client`] with `resolver`.
fn client_resolving(resolver: CheckedResolver) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(resolver))
        .pool_idle_timeout(IDLE_CONNECTION)
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
}

/// The deliverer task (contract, section 21).
pub struct Deliverer {
    sender: Arc<Sender>,
    db: Db,
    retry_for_secs: i64,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Deliverer {
    /// `db` is the deliverer's own small pool; `hosts` and `secret` are
    /// `CALLBACK_ALLOWED_HOSTS` and `CALLBACK_SECRET`; a failed delivery is
    /// tried again for `retry_for` (`CALLBACK_RETRY_SECS`) after its
    /// execution finished; it stops when `shutdown` turns true.
    ///
    /// Errors: the HTTP client cannot be built (its TLS configuration).
    pub fn new(
        db: Db,
        hosts: AllowedHosts,
        secret: &str,
        retry_for: Duration,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let client = client(&hosts).map_err(|e| anyhow::anyhow!("callback HTTP client: {e}"))?;
        Ok(Deliverer {
            sender: Arc::new(Sender {
                client,
                hosts,
                secret: secret.as_bytes().to_vec(),
            }),
            db,
            retry_for_secs: i64::try_from(retry_for.as_secs()).unwrap_or(i64::MAX),
            metrics,
            shutdown,
        })
    }

    /// Claims, sends and settles until shutdown. A round settles the
    /// attempts that ended and claims as many due rows as there is room for
    /// ([`MAX_CLAIMED`], of which [`MAX_IN_FLIGHT`] sending), in one
    /// statement, while deliveries go on; a delivery starts as soon as a
    /// slot is free. A failed round (the database unavailable) is logged and
    /// its attempts settled by the next one.
    pub async fn run(mut self) {
        let mut in_flight: JoinSet<Tried> = JoinSet::new();
        let mut waiting: VecDeque<DueDelivery> = VecDeque::new();
        let mut ended: Vec<Tried> = Vec::new();
        let mut running: Option<Round> = None;
        // nothing was due: no claim before then
        let mut idle_until: Option<Instant> = None;
        loop {
            while in_flight.len() < MAX_IN_FLIGHT {
                let Some(delivery) = waiting.pop_front() else {
                    break;
                };
                let sender = self.sender.clone();
                in_flight.spawn(async move { sender.deliver(delivery).await });
            }
            if running.is_none() {
                let claim = if idle_until.is_some_and(|t| Instant::now() < t) {
                    0
                } else {
                    MAX_CLAIMED - in_flight.len() - waiting.len()
                };
                if claim > 0 || !ended.is_empty() {
                    running = Some(self.start_round(std::mem::take(&mut ended), claim));
                }
            }
            if *self.shutdown.borrow() {
                break;
            }
            tokio::select! {
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    collect(joined, &mut ended);
                }
                (round, outcome) = finish(&mut running) => {
                    match outcome {
                        Ok((settled, due)) => {
                            self.report(&settled);
                            // a round that only settled says nothing of what is due
                            if round.claim > 0 {
                                idle_until = (due.len() < round.claim)
                                    .then(|| Instant::now() + POLL);
                            }
                            waiting.extend(due);
                        }
                        Err(e) => {
                            log::warn!("callbacks: claim or settlement failed, retrying: {e:#}");
                            ended.extend(round.settling);
                            idle_until = Some(Instant::now() + POLL);
                        }
                    }
                }
                _ = sleep_until(idle_until), if running.is_none() => idle_until = None,
                _ = self.shutdown.changed() => {}
            }
        }
        log::info!("callback deliverer stopped");
    }

    /// Starts a round: settles `settling` and claims at most `claim` due
    /// rows, in one statement, on the deliverer's pool.
    fn start_round(&self, settling: Vec<Tried>, claim: usize) -> Round {
        let (db, retry_for) = (self.db.clone(), self.retry_for_secs);
        let (ended, limit) = (settling.clone(), i64::try_from(claim).unwrap_or(0));
        let task = tokio::spawn(async move {
            db.run(move |conn| {
                callbacks::settle_and_claim(conn, &ended, retry_for, limit, LEASE_MS)
                    .map_err(anyhow::Error::from)
            })
            .await
        });
        Round {
            settling,
            claim,
            task,
        }
    }

    /// Counts and logs what a round settled.
    fn report(&self, settled: &[SettledDelivery]) {
        for delivery in settled {
            let (event_id, attempts) = (delivery.event_id, delivery.attempts);
            match delivery.settled {
                Settled::Delivered => self.metrics.callback("delivered"),
                Settled::Retried => {
                    self.metrics.callback("retried");
                    log::info!("callback {event_id}: attempt {attempts} failed, trying again");
                }
                Settled::GivenUp => {
                    self.metrics.callback("given_up");
                    log::warn!("callback {event_id}: given up after {attempts} attempts");
                }
            }
        }
    }
}

/// What a round settled and claimed.
type RoundOutcome = (Vec<SettledDelivery>, Vec<DueDelivery>);

/// A round in progress ([`Deliverer::start_round`]).
struct Round {
    /// The attempts it settles (settled again by the next round if it fails).
    settling: Vec<Tried>,
    /// How many rows it claims at most.
    claim: usize,
    task: JoinHandle<anyhow::Result<RoundOutcome>>,
}

/// Waits for the round in progress to end, forever if there is none; takes
/// it out of `running` and gives it with what it came to.
async fn finish(running: &mut Option<Round>) -> (Round, anyhow::Result<RoundOutcome>) {
    let Some(round) = running.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = match (&mut round.task).await {
        Ok(outcome) => outcome,
        Err(e) => Err(anyhow::anyhow!("the round's task failed: {e}")),
    };
    match running.take() {
        Some(round) => (round, outcome),
        None => std::future::pending().await,
    }
}

/// Sleeps until `until`, forever if it is `None`.
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}

/// Adds a delivery task's attempt to `ended`; a task that panicked is
/// logged (its row's lease ends and it is claimed again).
fn collect(joined: Result<Tried, JoinError>, ended: &mut Vec<Tried>) {
    match joined {
        Ok(tried) => {
            if let Some(error) = &tried.attempt.error {
                log::info!("callback {}: attempt failed: {error}", tried.event_id);
            }
            ended.push(tried);
        }
        Err(e) => log::warn!("callbacks: a delivery task failed: {e}"),
    }
}

impl Sender {
    /// One attempt of `delivery` and the back-off to wait if it failed.
    async fn deliver(&self, delivery: DueDelivery) -> Tried {
        let attempt = self.send(&delivery).await;
        let jitter = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
        let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
        let retry_in = retry_delay(attempts, jitter);
        Tried {
            event_id: delivery.event_id,
            attempt,
            retry_in_ms: i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// POSTs the delivery once: delivered on a 2xx status within
    /// [`ATTEMPT_TIMEOUT`] (section 21), whatever its body does, else the
    /// status or error that failed it. The host is checked here (an IP
    /// literal never reaches the resolver).
    async fn send(&self, delivery: &DueDelivery) -> Attempt {
        let failed = |status: Option<i32>, error: String| Attempt {
            status,
            error: Some(error),
        };
        let url = match Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(e) => return failed(None, format!("not a URL: {e}")),
        };
        match url.host() {
            None => return failed(None, "the URL has no host".to_owned()),
            Some(host) if !self.hosts.allows(&host) => {
                return failed(None, format!("host {host} is not allowed"))
            }
            Some(_) => {}
        }
        let request = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-PlanQueue-Event", "execution.finished")
            .header("X-PlanQueue-Delivery", delivery.event_id.to_string())
            .header(
                "X-PlanQueue-Signature",
                signature(&self.secret, delivery.body.as_bytes()),
            )
            .body(delivery.body.clone());
        let response = match tokio::time::timeout(ATTEMPT_TIMEOUT, request.send()).await {
            Err(_) => return failed(None, format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            Ok(Err(e)) => return failed(None, describe(e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        // the body decides nothing; read whole, the connection is reused
        let _ = tokio::time::timeout(ANSWER_BODY_TIMEOUT, read_some(response)).await;
        if status.is_success() {
            Attempt {
                status: Some(i32::from(status.as_u16())),
                error: None,
            }
        } else {
            failed(
                Some(i32::from(status.as_u16())),
                format!("answered {status}"),
            )
        }
    }
}

/// Reads `response`'s body up to its end, an error or [`MAX_ANSWER_BYTES`]
/// (a body read to its end lets the connection go back to the pool).
async fn read_some(mut response: reqwest::Response) {
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
}

/// A reqwest error with its causes (so a TLS failure reads e.g. `... invalid
/// peer certificate: UnknownIssuer`), without the URL's query (which may
/// carry a receiver's own token).
fn describe(error: reqwest::Error) -> String {
    // the client has no timeout of its own: ATTEMPT_TIMEOUT bounds the send
    // from outside (`Sender::send`), so a timeout never reaches here
    let connect = error.is_connect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> AllowedHosts {
        AllowedHosts::parse(list).unwrap()
    }

    #[tokio::test]
    async fn the_resolver_answers_only_for_an_allowed_name() {
        let addresses = CheckedResolver::new(hosts("localhost"))
            .addresses("localhost")
            .await
            .unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
        assert_eq!(
            CheckedResolver::new(hosts("127.0.0.1, *.localhost"))
                .addresses("localhost")
                .await,
            Err("host localhost is not allowed".to_owned())
        );
    }

    fn answering(list: &str, ips: &[&str]) -> CheckedResolver {
        CheckedResolver {
            hosts: hosts(list),
            fixed: Some(ips.iter().map(|ip| ip.parse().unwrap()).collect()),
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses_and_refuses_a_name_with_none_left() {
        let mixed = answering("hooks.example.com", &["127.0.0.1", "93.184.216.34"])
            .addresses("hooks.example.com")
            .await;
        assert_eq!(mixed, Ok(vec!["93.184.216.34:0".parse().unwrap()]));
        let error = answering("hooks.example.com", &["127.0.0.1", "169.254.169.254"])
            .addresses("hooks.example.com")
            .await
            .unwrap_err();
        assert_eq!(
            error,
            "hooks.example.com resolves to no allowed address: 127.0.0.1 is a loopback \
             address, not listed as an IP literal; 169.254.169.254 is a link-local address, \
             not listed as an IP literal"
        );
        let listed = answering("hooks.example.com, 127.0.0.1", &["127.0.0.1"])
            .addresses("hooks.example.com")
            .await;
        assert_eq!(listed, Ok(vec!["127.0.0.1:0".parse().unwrap()]));
    }

    /// One attempt of a delivery to `url` through `resolver`.
    async fn attempt(resolver: CheckedResolver, url: String) -> Attempt {
        let sender = Sender {
            client: client_resolving(resolver.clone()).unwrap(),
            hosts: resolver.hosts,
            secret: b"secret".to_vec(),
        };
        let delivery = DueDelivery {
            event_id: uuid::Uuid::new_v4(),
            url,
            body: "{}".to_owned(),
            attempts: 0,
        };
        sender.send(&delivery).await
    }

    #[tokio::test]
    async fn a_listed_name_resolving_to_loopback_is_never_contacted_and_the_attempt_says_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://hooks.example.com:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let refused = attempt(answering("hooks.example.com", &["127.0.0.1"]), url).await;
        assert_eq!(refused.status, None);
        let error = refused.error.unwrap();
        assert!(
            error.contains("127.0.0.1 is a loopback address, not listed as an IP literal"),
            "{error}"
        );
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }

    #[tokio::test]
    async fn the_client_never_connects_to_a_name_the_list_does_not_allow() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // the address is allowed, the name that resolves to it is not
        let client = client(&hosts("127.0.0.1")).unwrap();
        let error = client
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(describe(error).contains("host localhost is not allowed"));
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }
}
