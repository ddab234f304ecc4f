//! One broker connection per component, aware of flow control.
//!
//! RabbitMQ answers a memory or disk alarm by blocking the connections that
//! publish (`connection.blocked`, then `connection.unblocked` when the alarm
//! clears; <https://www.rabbitmq.com/docs/connection-blocked>). A blocked
//! connection is alive: lapin keeps its frames until the unblock and sends
//! them then. Treating it as dead (time out, open another connection,
//! publish again) piles up blocked connections and duplicates. So:
//!
//! - [`BrokerConnection`] holds at most one connection: it closes the old one
//!   (a bounded wait) before it opens a new one, and never replaces a
//!   connection only because it is blocked;
//! - [`Link::is_blocked`] and [`Link::unblocked`] let a publisher stop
//!   claiming work while blocked and resume after;
//! - [`Link::within`] is a timeout that does not count the blocked time;
//! - [`BrokerStatus`] shows connected, blocked and topology conflicts to
//!   readiness and metrics.
//!
//! Every component (the relay, the results consumer, the runner) owns one
//! [`BrokerConnection`] and its own [`BrokerStatus`].
//!
//! Several brokers: `AMQP_URL` may list several nodes of one cluster,
//! comma-separated. [`BrokerConnection::open`] tries them in order from the
//! node it last used and keeps the first that answers; when that connection
//! drops, the next attempt starts at the following node, so a component
//! moves off a dead node at once (the caller's back-off applies between
//! rounds in which no node answered). The node in use (`host:port`, never
//! the credentials) is logged and shown in [`BrokerStatus::broker_node`].

use super::conflict::TopologyConflict;
use crate::config::{node_of, split_urls};
use anyhow::Context;
use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The AMQP frame size, in bytes, that a connection which consumes proposes
/// to the broker when `AMQP_URL` has no `frame_max` query parameter: 131 072,
/// RabbitMQ's own default (AMQP 0-9-1 `connection.tune-ok`; the smaller of
/// the two proposals wins). A message's properties and headers travel in one
/// frame, so a consumer must take frames as large as the broker accepts from
/// publishers; a broker configured above RabbitMQ's default needs the same
/// `?frame_max=` in `AMQP_URL`. Proposed rather than left to the broker
/// (lapin's `0`) because lapin, when it learns the size from the broker,
/// grows its two buffers of 32 frames by writing zeros: 8 MiB resident per
/// connection from the first second, used or not (issue 22's RSS row).
pub const FRAME_MAX: u32 = 131_072;

/// The frame size a publish-only connection (the relay) proposes: it
/// receives only confirms and, for an unroutable message, the message's own
/// properties back, which plan-queue builds and keeps well under 1 KiB; a
/// larger body is split into frames. lapin's buffers are rings of 32
/// frames each way, so this bounds them at 1 MiB a connection instead of
/// 8 MiB.
pub const PUBLISH_ONLY_FRAME_MAX: u32 = 16 * 1024;

/// `url` parsed, with `frame_max` set to `frame_max` unless the URL names
/// one (`amqp://…/vhost?frame_max=…`).
///
/// Errors: the URL does not parse (checked at start-up by `config`).
pub fn with_frame_max(url: &str, frame_max: u32) -> anyhow::Result<lapin::uri::AMQPUri> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{e}"))
        .with_context(|| format!("AMQP_URL {} is not an AMQP URL", node_of(url)))?;
    uri.query.frame_max.get_or_insert(frame_max);
    Ok(uri)
}

/// How long closing a connection may take before it is abandoned (a blocked
/// or silent broker never answers `connection.close`).
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What one component's broker connection looks like now, for readiness
/// and metrics. Written by [`BrokerConnection`] and its [`Link`]; the
/// topology conflicts by whoever declares the topology.
#[derive(Default, Debug)]
pub struct BrokerStatus {
    connected: AtomicBool,
    node: Mutex<Option<String>>,
    blocked: Mutex<Option<String>>,
    conflicts: Mutex<Vec<TopologyConflict>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl BrokerStatus {
    /// True while the component holds an open broker connection.
    pub fn broker_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The node (`host:port`) of the open connection, `None` while there is
    /// none.
    pub fn broker_node(&self) -> Option<String> {
        lock(&self.node).clone()
    }

    /// The broker's reason (e.g. `low on memory`) while it blocks the
    /// connection (`connection.blocked`), else `None`.
    pub fn broker_blocked(&self) -> Option<String> {
        lock(&self.blocked).clone()
    }

    /// The parts of the topology the broker refused to declare as configured.
    pub fn conflicts(&self) -> Vec<TopologyConflict> {
        lock(&self.conflicts).clone()
    }

    /// Replaces the known topology conflicts (after a declaration round).
    pub fn set_conflicts(&self, conflicts: Vec<TopologyConflict>) {
        *lock(&self.conflicts) = conflicts;
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if !connected {
            *lock(&self.blocked) = None;
            *lock(&self.node) = None;
        }
    }

    fn set_blocked(&self, reason: Option<String>) {
        *lock(&self.blocked) = reason;
    }
}

/// The budget of [`Link::within`] ran out while the connection was not blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

struct LinkInner {
    connection: Connection,
    blocked: watch::Receiver<bool>,
    /// Dropped with the link: ends the task that follows the connection's events.
    _stop_events: oneshot::Sender<()>,
}

/// An open broker connection and its flow-control state; cheap to clone
/// (channels of a publisher keep a clone to time their waits).
#[derive(Clone)]
pub struct Link(Arc<LinkInner>);

impl Link {
    /// The lapin connection, to open channels on.
    pub fn connection(&self) -> &Connection {
        &self.0.connection
    }

    /// True while the connection is open (blocked or not).
    pub fn is_open(&self) -> bool {
        self.0.connection.status().connected()
    }

    /// True between the broker's `connection.blocked` and `connection.unblocked`.
    pub fn is_blocked(&self) -> bool {
        *self.0.blocked.borrow()
    }

    /// Returns once the connection is not blocked (at once if it is not).
    pub async fn unblocked(&self) {
        let mut blocked = self.0.blocked.clone();
        // an error means the connection is gone: nothing blocks any more
        let _ = blocked.wait_for(|b| !*b).await;
    }

    /// Returns once the broker blocks the connection; never while it stays
    /// unblocked (or is gone).
    pub async fn blocked(&self) {
        let mut blocked = self.0.blocked.clone();
        if blocked.wait_for(|b| *b).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Awaits `work`, but gives up with [`Elapsed`] once `budget` has passed
    /// while the connection was not blocked: time spent blocked by the
    /// broker's flow control does not count (resolution: the blocked and
    /// unblocked events as they arrive).
    pub async fn within<F: Future>(&self, budget: Duration, work: F) -> Result<F::Output, Elapsed> {
        tokio::pin!(work);
        let mut blocked = self.0.blocked.clone();
        let mut left = budget;
        loop {
            let is_blocked = *blocked.borrow_and_update();
            let started = Instant::now();
            tokio::select! {
                output = &mut work => return Ok(output),
                _ = tokio::time::sleep(left), if !is_blocked => return Err(Elapsed),
                changed = blocked.changed() => {
                    if !is_blocked {
                        left = left.saturating_sub(started.elapsed());
                    }
                    if changed.is_err() {
                        // the events are over (connection gone): plain timeout
                        return tokio::time::timeout(left, work).await.map_err(|_| Elapsed);
                    }
                }
            }
        }
    }

    /// Closes the connection politely, waiting at most [`CLOSE_WAIT`]; a
    /// connection that cannot answer (blocked, silent) is abandoned and
    /// dropped.
    pub async fn close(&self, reason: &str) {
        if !self.is_open() {
            return;
        }
        let close = self.0.connection.close(200, reason.into());
        match tokio::time::timeout(CLOSE_WAIT, close).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("closing the broker connection: {e}"),
            Err(_) => log::warn!("the broker did not confirm closing the connection within {CLOSE_WAIT:?}; abandoned"),
        }
    }
}

/// At most one broker connection of one component: [`open`](Self::open)
/// returns the current connection while it is open (blocked or not) and
/// otherwise closes it before opening the next; [`BrokerStatus`] follows
/// ([`set_ready`](Self::set_ready) once the component's set-up succeeded).
///
/// Use: `let link = broker.open().await?;` then set up channels on
/// `link.connection()` and call `broker.set_ready()`; before each unit of
/// work, hold off while `link.is_blocked()` (`link.unblocked().await`); wrap
/// every wait for the broker in `link.within(timeout, …)`; after a timeout
/// call `broker.close(…)` before the next `open`.
pub struct BrokerConnection {
    urls: Vec<String>,
    /// Index in `urls` of the node to try first.
    next: usize,
    /// The last connection dropped: the next `open` starts at the next node.
    dropped: bool,
    name: String,
    timeout: Duration,
    status: Arc<BrokerStatus>,
    current: Option<Link>,
    /// Proposed when the URL names none: [`FRAME_MAX`], or
    /// [`PUBLISH_ONLY_FRAME_MAX`] after [`Self::publish_only`].
    frame_max: u32,
}

impl BrokerConnection {
    /// `urls` is `AMQP_URL`: one broker URL or several, comma-separated
    /// (tried in order); `name` the connection name the broker shows (e.g.
    /// `plan-queue relay`), `timeout` bounds each connection attempt;
    /// `status` is this component's view for readiness and metrics.
    pub fn new(urls: &str, name: &str, timeout: Duration, status: Arc<BrokerStatus>) -> Self {
        BrokerConnection {
            urls: split_urls(urls),
            next: 0,
            dropped: false,
            name: name.to_owned(),
            timeout,
            status,
            current: None,
            frame_max: FRAME_MAX,
        }
    }

    /// For a connection that only publishes (the relay): proposes
    /// [`PUBLISH_ONLY_FRAME_MAX`] unless the URL names a frame size.
    pub fn publish_only(mut self) -> Self {
        self.frame_max = PUBLISH_ONLY_FRAME_MAX;
        self
    }

    /// The open connection, if any.
    pub fn current(&self) -> Option<&Link> {
        self.current.as_ref().filter(|link| link.is_open())
    }

    /// The current connection while it is open; otherwise the old one is
    /// closed first and a new one opened, each node tried in turn (from the
    /// one after the node whose connection dropped) within the timeout.
    /// Errors: no node answered or accepted the connection (the last error).
    pub async fn open(&mut self) -> anyhow::Result<Link> {
        if let Some(link) = self.current() {
            return Ok(link.clone());
        }
        self.close("replaced: the connection failed").await;
        if std::mem::take(&mut self.dropped) && self.urls.len() > 1 {
            self.next = (self.next + 1) % self.urls.len();
        }
        let mut last_error = anyhow::anyhow!("AMQP_URL names no broker");
        for step in 0..self.urls.len() {
            let index = (self.next + step) % self.urls.len();
            let url = &self.urls[index];
            let node = node_of(url);
            match self.connect(url).await {
                Ok(connection) => {
                    log::info!("{}: connected to RabbitMQ node {node}", self.name);
                    let link = follow_events(connection, self.status.clone());
                    self.next = index;
                    self.current = Some(link.clone());
                    *lock(&self.status.node) = Some(node);
                    return Ok(link);
                }
                Err(e) => {
                    if self.urls.len() > 1 {
                        log::warn!("{}: RabbitMQ node {node} did not answer: {e:#}", self.name);
                    }
                    last_error = e.context(format!("RabbitMQ node {node}"));
                }
            }
        }
        Err(last_error)
    }

    /// One connection attempt to `url`, bounded by the timeout; the frame
    /// size proposed to the broker is this connection's (see
    /// [`Self::publish_only`]) unless the URL names one.
    async fn connect(&self, url: &str) -> anyhow::Result<Connection> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let uri = with_frame_max(url, self.frame_max)?;
        tokio::time::timeout(self.timeout, Connection::connect_uri(uri, properties))
            .await
            .context("connecting to RabbitMQ timed out")?
            .context("cannot connect to RabbitMQ")
    }

    /// Shows the connection as connected (readiness, metrics) once the
    /// component's own set-up on it (topology, channels) succeeded.
    pub fn set_ready(&self) {
        self.status.set_connected(self.current().is_some());
    }

    /// Closes the current connection (bounded by [`CLOSE_WAIT`]) so that
    /// the next [`open`](Self::open) starts afresh: after a timeout that
    /// leaves the connection's state unknown, and at shutdown.
    pub async fn close(&mut self, reason: &str) {
        if let Some(link) = self.current.take() {
            self.dropped |= !link.is_open();
            link.close(reason).await;
        }
        self.status.set_connected(false);
    }
}

/// Wraps `connection` in a [`Link`] whose blocked state follows the
/// connection's events; a task logs and records each change in `status`
/// until the link is dropped or the connection's events end.
fn follow_events(connection: Connection, status: Arc<BrokerStatus>) -> Link {
    let (blocked_tx, blocked) = watch::channel(connection.status().blocked());
    let (stop, mut stopped) = oneshot::channel::<()>();
    let mut events = connection.events_listener();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = &mut stopped => None,
            };
            match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    log::warn!("RabbitMQ blocked the connection ({reason}): publishing waits until it unblocks");
                    status.set_blocked(Some(reason));
                    blocked_tx.send_replace(true);
                }
                Some(Event::ConnectionUnblocked) => {
                    log::info!("RabbitMQ unblocked the connection: publishing resumes");
                    status.set_blocked(None);
                    blocked_tx.send_replace(false);
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    Link(Arc::new(LinkInner {
        connection,
        blocked,
        _stop_events: stop,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_frame_max_proposes_frame_max_and_one_with_it_keeps_its_own() {
        let uri = with_frame_max("amqp://guest:guest@127.0.0.1:5672/%2f", FRAME_MAX).unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        assert_eq!(uri.authority.port, 5672);
        let uri = with_frame_max(
            "amqp://127.0.0.1:5672/%2f?frame_max=8192&heartbeat=5",
            PUBLISH_ONLY_FRAME_MAX,
        )
        .unwrap();
        assert_eq!(uri.query.frame_max, Some(8192));
        assert_eq!(uri.query.heartbeat, Some(5));
    }

    #[test]
    fn a_url_that_does_not_parse_is_an_error_naming_the_node_not_the_password() {
        let e = with_frame_max("http://user:secret@host:1/x", FRAME_MAX).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("host:1"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
