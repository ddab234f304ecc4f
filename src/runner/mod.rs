//! `plan-queue runner` (contract, section 12): a runner for tests, demos and
//! smoke tests, and an example for runner authors to copy.
//!
//! It consumes the quorum queue `<exchange>.<T>` of one framework type with
//! manual acknowledgements and a prefetch of `--concurrency`, and for each
//! `scenario.run` / `scenario.rerun` message:
//! 1. skips it (acknowledged) when its `messageId` was already reported by
//!    this process — delivery is at least once;
//! 2. publishes a `RUNNING` result to the fanout exchange `<exchange>.results`;
//! 3. runs `--command` through `sh -c` with the message's fields in the
//!    environment (`PQ_MESSAGE_ID`, `PQ_EXECUTION_ID`, `PQ_PLAN_ID`,
//!    `PQ_SCENARIO_ID`, `PQ_ENVIRONMENT_ID`, `PQ_ATTEMPT`,
//!    `PQ_FRAMEWORK_TYPE`, `PQ_SCENARIO_NAME`, `PQ_ENVIRONMENT_NAME`,
//!    `PQ_PLATFORM`, `PQ_VERSION`) and the body on standard input; without
//!    a command every pair passes;
//! 4. publishes `PASSED` (exit status 0), `FAILED` (any other) or `ERROR`
//!    (cannot start, or still running after `--timeout-secs`), with
//!    `durationMs` and the last 4 KiB of its output as `detail`;
//! 5. acknowledges the message only after the broker confirmed that result.
//!
//! A message past its `expiresAt` (contract, section 15) is acknowledged
//! without running or reporting it. The runner listens to
//! `execution.cancelled.<T>` events (section 16) on an exclusive, auto-delete
//! queue of its own bound to `<exchange>.events`: a cancelled message it has
//! not started is acknowledged without running or reporting, and the process
//! group of one it is running is killed (nothing is reported: the pair is
//! already ended).
//!
//! Its commands die with it: each runs in a process group of its own, killed
//! when the runner stops (SIGTERM, SIGINT — in every state, also while it
//! waits to reconnect); and the shell is started with `PR_SET_PDEATHSIG`
//! (Linux), so even a SIGKILLed runner leaves no shell behind. (A process
//! that shell forks in the background does not inherit it: a command that
//! starts daemons should stop them itself.)
//!
//! A message whose body is not a run message is rejected without requeue
//! (dead-lettered). The runner reconnects with back-off when the connection
//! drops, closing the old connection first; unacknowledged messages are
//! delivered again. While the broker blocks the connection (a memory or disk
//! alarm) a result waits for its confirm without the blocked time counting
//! toward `PUBLISH_TIMEOUT_MS` ([`crate::amqp::link`]).

use crate::amqp::{BrokerConnection, BrokerStatus, Link};
use crate::config::AmqpConfig;
use crate::domain::events::ExecutionCancelled;
use crate::domain::{PairStatus, RerunMessage, ResultMessage};
use crate::rules::names::MESSAGE_EXECUTION_CANCELLED;
use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use std::collections::{HashSet, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// AMQP `type` of a result message (contract, section 9).
pub const RESULT_TYPE: &str = "scenario.result";
/// Bytes of the command's output kept as `detail` (contract, section 12).
pub const DETAIL_BYTES: usize = 4096;
/// Message ids remembered for de-duplication.
const REMEMBERED: usize = 100_000;
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The options of `plan-queue runner`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunnerOptions {
    /// The framework type whose queue `<exchange>.<T>` is consumed.
    #[arg(long)]
    pub framework_type: String,
    /// Shell command run for each pair (`sh -c`); exit 0 passes. Without it every pair passes.
    #[arg(long)]
    pub command: Option<String>,
    /// Pairs run at the same time (also the prefetch).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds a command may run before it is killed and reported as ERROR.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// The result of `run` with `status`, now (the body of section 9).
fn result_message(run: &RerunMessage, status: PairStatus) -> ResultMessage {
    ResultMessage {
        message_id: run.message_id.clone(),
        execution_id: run.execution_id,
        scenario_id: run.scenario_id,
        environment_id: run.environment_id,
        attempt: run.attempt,
        status,
        at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        duration_ms: None,
        report_url: None,
        detail: None,
    }
}

/// What running the command gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `PASSED`, `FAILED` or `ERROR`.
    pub status: PairStatus,
    pub duration_ms: u64,
    /// The last [`DETAIL_BYTES`] of the output (stdout then stderr), if any.
    pub detail: Option<String>,
}

/// Message ids already reported, oldest forgotten first.
#[derive(Default)]
struct Reported {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Reported {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

/// What the runner knows of cancels (contract, section 16): the message ids
/// cancelled, and the process group of each message it is running.
#[derive(Default)]
struct Cancels {
    cancelled: Reported,
    running: std::collections::HashMap<String, u32>,
    /// The runner is stopping: nothing new starts, and a command killed by
    /// the stop is not reported (its message is delivered again).
    stopping: bool,
}

impl Cancels {
    /// Records the cancel of `message_id`; kills its command if running.
    fn cancel(&mut self, message_id: &str) {
        self.cancelled.insert(message_id.to_owned());
        if let Some(group) = self.running.get(message_id) {
            log::info!("runner: message {message_id} was cancelled: its command is killed");
            kill_group(*group);
        }
    }

    /// Records that `message_id` runs in process group `group`; kills it at
    /// once when the message was cancelled meanwhile.
    fn started(&mut self, message_id: &str, group: u32) {
        self.running.insert(message_id.to_owned(), group);
        if self.cancelled.contains(message_id) {
            kill_group(group);
        }
    }

    /// Kills every command still running (the runner stops); from now on
    /// nothing starts and nothing killed is reported.
    fn kill_all(&mut self) {
        self.stopping = true;
        for group in self.running.values() {
            kill_group(*group);
        }
    }
}

type SharedCancels = Arc<Mutex<Cancels>>;

/// Clones of a session's channels, held until its connection is closed: a
/// channel whose last handle drops while its connection closes is closed
/// twice at once, which lapin logs at ERROR (`invalid channel state:
/// Closing`) on every stop. Dropped after the connection, they close nothing.
#[derive(Clone, Default)]
struct OpenChannels(Arc<Mutex<Vec<Channel>>>);

impl OpenChannels {
    fn hold(&self, channel: &Channel) {
        if let Ok(mut held) = self.0.lock() {
            held.push(channel.clone());
        }
    }

    /// Releases the channels; call after the connection is closed.
    fn release(&self) {
        if let Ok(mut held) = self.0.lock() {
            held.clear();
        }
    }
}

/// Consumes until SIGINT/SIGTERM, reconnecting with back-off; the stop
/// signal is heard in every state (connecting, consuming, waiting to
/// reconnect), and the commands still running are killed.
///
/// Errors: `--framework-type` is not one of `FRAMEWORK_TYPES`.
pub async fn run(amqp: AmqpConfig, options: RunnerOptions) -> anyhow::Result<()> {
    let framework_type = options.framework_type.to_ascii_uppercase();
    anyhow::ensure!(
        amqp.framework_types.contains(&framework_type),
        "--framework-type {framework_type} is not one of FRAMEWORK_TYPES ({})",
        amqp.framework_types.join(",")
    );
    let options = Arc::new(RunnerOptions {
        framework_type,
        ..options
    });
    let reported = Arc::new(Mutex::new(Reported::default()));
    let mut broker = BrokerConnection::new(
        &amqp.url,
        "plan-queue runner",
        amqp.publish_timeout,
        Arc::new(BrokerStatus::default()),
    );
    let cancels = SharedCancels::default();
    let channels = OpenChannels::default();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut delay = Duration::from_millis(100);
    loop {
        let session = consume(&amqp, &options, &reported, &cancels, &channels, &mut broker);
        let stopped = tokio::select! {
            result = session => {
                match result {
                    Ok(()) => log::warn!("runner: the broker closed the consumer; reconnecting"),
                    Err(e) => {
                        log::warn!("runner: {e:#}; reconnecting in {delay:?}");
                        if let Some(hint) = missing_queue_hint(&e, &amqp, &options.framework_type) {
                            log::warn!("{hint}");
                        }
                    }
                }
                false
            }
            _ = &mut stop => true,
        };
        if !stopped {
            broker.close("the runner's session ended").await;
            channels.release();
            let stopped = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = &mut stop => true,
            };
            if !stopped {
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
        }
        if let Ok(mut cancels) = cancels.lock() {
            cancels.kill_all();
        }
        broker.close("plan-queue runner stopping").await;
        channels.release();
        log::info!("runner stopped; unacknowledged messages will be delivered again");
        return Ok(());
    }
}

/// What to check when the broker says the queue is missing
/// (`NOT_FOUND - no queue`): the deployment's `AMQP_EXCHANGE`, and that
/// `plan-queue serve` declared the topology. `None` for any other error.
fn missing_queue_hint(
    error: &anyhow::Error,
    amqp: &AmqpConfig,
    framework_type: &str,
) -> Option<String> {
    let text = format!("{error:#}");
    if !(text.contains("NOT_FOUND") && text.contains("no queue")) {
        return None;
    }
    Some(format!(
        "runner: the queue {} does not exist on this broker. Check that AMQP_EXCHANGE \
         ({}) is the one the deployment's `plan-queue serve` uses, that {framework_type} is \
         in its FRAMEWORK_TYPES, and that `plan-queue serve` has started once against this \
         broker (it declares the queues); AMQP_URL names the broker and vhost",
        amqp.queue_name(framework_type),
        amqp.exchange
    ))
}

/// Sends SIGKILL to process group `group`; a group that is gone already is ignored.
fn kill_group(group: u32) {
    #[cfg(unix)]
    if let Ok(pgid) = libc::pid_t::try_from(group) {
        // SAFETY: killpg only sends a signal; a group that is gone already
        // makes it fail with ESRCH, which is ignored.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// One connection (the previous one closed first): consume until it fails.
async fn consume(
    amqp: &AmqpConfig,
    options: &Arc<RunnerOptions>,
    reported: &Arc<Mutex<Reported>>,
    cancels: &SharedCancels,
    channels: &OpenChannels,
    broker: &mut BrokerConnection,
) -> anyhow::Result<()> {
    let link = broker.open().await?;
    let connection = link.connection();
    let results = results_exchange(&amqp.exchange);
    let publisher = connection.create_channel().await?;
    channels.hold(&publisher);
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publisher
        .exchange_declare(
            results.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {results}"))?;
    let listener =
        listen_for_cancels(connection, amqp, &options.framework_type, cancels, channels).await?;
    let _listener = AbortOnDrop(listener);
    let channel = connection.create_channel().await?;
    channels.hold(&channel);
    channel
        .basic_qos(options.concurrency, BasicQosOptions::default())
        .await?;
    let queue = amqp.queue_name(&options.framework_type);
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "plan-queue-runner".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    broker.set_ready();
    log::info!("runner: consuming {queue}, results to {results}");
    let limit = Arc::new(tokio::sync::Semaphore::new(usize::from(
        options.concurrency,
    )));
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.context("the consumer failed")?;
        let permit = limit.clone().acquire_owned().await?;
        let job = Job {
            link: link.clone(),
            publisher: publisher.clone(),
            results: results.clone(),
            options: options.clone(),
            reported: reported.clone(),
            cancels: cancels.clone(),
            timeout: amqp.publish_timeout,
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = job.handle(delivery).await {
                log::warn!("runner: {e:#}; the message will be delivered again");
            }
        });
    }
    Ok(())
}

/// Aborts a task when dropped (the session ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds an exclusive, auto-delete queue of this runner's to
/// `<exchange>.events` with key `execution.cancelled.<T>` and spawns the
/// task that records each cancelled message (contract, section 16).
async fn listen_for_cancels(
    connection: &lapin::Connection,
    amqp: &AmqpConfig,
    framework_type: &str,
    cancels: &SharedCancels,
    channels: &OpenChannels,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let events = amqp.events_name();
    let channel = connection.create_channel().await?;
    channels.hold(&channel);
    channel
        .exchange_declare(
            events.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {events}"))?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the queue of cancel events")?;
    let key = format!("{MESSAGE_EXECUTION_CANCELLED}.{framework_type}");
    channel
        .queue_bind(
            queue.name().clone(),
            events.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding the queue of cancel events to {events}"))?;
    let mut deliveries = channel
        .basic_consume(
            queue.name().clone(),
            "plan-queue-runner-cancels".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming cancel events")?;
    let cancels = cancels.clone();
    Ok(tokio::spawn(async move {
        let _channel = channel;
        while let Some(Ok(delivery)) = deliveries.next().await {
            let Ok(event) = serde_json::from_slice::<ExecutionCancelled>(&delivery.data) else {
                log::warn!("runner: an execution.cancelled event that cannot be read, ignored");
                continue;
            };
            if let Ok(mut cancels) = cancels.lock() {
                for pair in &event.pairs {
                    cancels.cancel(&pair.message_id.to_string());
                }
            }
        }
    }))
}

/// `<exchange>.results`, the fanout exchange of results (contract, section 9).
pub fn results_exchange(exchange: &str) -> String {
    format!("{exchange}.results")
}

struct Job {
    link: Link,
    publisher: Channel,
    results: String,
    options: Arc<RunnerOptions>,
    reported: Arc<Mutex<Reported>>,
    cancels: SharedCancels,
    timeout: Duration,
}

impl Job {
    /// True once the runner stops ([`Cancels::kill_all`]).
    fn stopping(&self) -> bool {
        self.cancels.lock().map(|c| c.stopping).unwrap_or(true)
    }

    fn cancelled(&self, message_id: &str) -> bool {
        self.cancels
            .lock()
            .map(|c| c.cancelled.contains(message_id))
            .unwrap_or(false)
    }

    async fn handle(&self, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
        let run: RerunMessage = match serde_json::from_slice(&delivery.data) {
            Ok(run) => run,
            Err(e) => {
                log::warn!("runner: not a run message, dead-lettered: {e}");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                return Ok(());
            }
        };
        let already = self
            .reported
            .lock()
            .map(|r| r.contains(&run.message_id))
            .unwrap_or(false);
        if already {
            log::info!(
                "runner: message {} already reported, skipped",
                run.message_id
            );
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        if expired(&run, Utc::now()) {
            log::info!(
                "runner: message {} expired at {}, acknowledged without running",
                run.message_id,
                run.expires_at.as_deref().unwrap_or("-")
            );
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        if self.cancelled(&run.message_id) {
            log::info!(
                "runner: message {} was cancelled, acknowledged without running",
                run.message_id
            );
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        if self.stopping() {
            // not acknowledged: the broker delivers it again when the
            // connection closes
            return Ok(());
        }
        self.publish(&result_message(&run, PairStatus::Running))
            .await?;
        let cancels = self.cancels.clone();
        let id = run.message_id.clone();
        let outcome = execute_tracked(&self.options, &run, &delivery.data, move |group| {
            if let Ok(mut cancels) = cancels.lock() {
                cancels.started(&id, group);
            }
        })
        .await;
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.running.remove(&run.message_id);
        }
        if self.stopping() {
            // the stop killed it: its exit status says nothing about the
            // scenario, so nothing is reported and the message is not
            // acknowledged; the broker delivers it again (contract, section 12)
            log::info!(
                "runner: stopping; the command of message {} was killed, nothing reported, \
                 the message will be delivered again",
                run.message_id
            );
            return Ok(());
        }
        if self.cancelled(&run.message_id) {
            log::info!(
                "runner: message {} was cancelled while it ran; its command was killed, \
                 nothing reported",
                run.message_id
            );
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        let mut result = result_message(&run, outcome.status);
        result.duration_ms = Some(outcome.duration_ms);
        result.detail = outcome.detail;
        self.publish(&result).await?;
        if let Ok(mut reported) = self.reported.lock() {
            reported.insert(run.message_id.clone());
        }
        delivery.ack(BasicAckOptions::default()).await?;
        log::info!(
            "runner: scenario {} on environment {} attempt {}: {} (message {})",
            run.scenario_id,
            run.environment_id,
            run.attempt,
            result.status,
            run.message_id
        );
        Ok(())
    }

    /// Publishes `result` (persistent, mandatory) and waits for its confirm,
    /// at most the publish timeout while the broker does not block the connection.
    async fn publish(&self, result: &ResultMessage) -> anyhow::Result<()> {
        let body = serde_json::to_vec(result)?;
        let id = uuid::Uuid::new_v4().to_string();
        let properties = BasicProperties::default()
            .with_delivery_mode(crate::amqp::PERSISTENT)
            .with_content_type("application/json".into())
            .with_type(RESULT_TYPE.into())
            .with_message_id(id.as_str().into())
            .with_app_id("plan-queue runner".into());
        let confirm = self
            .link
            .within(self.timeout, async {
                self.publisher
                    .basic_publish(
                        self.results.as_str().into(),
                        "".into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        properties,
                    )
                    .await?
                    .await
            })
            .await
            .map_err(|_| anyhow::anyhow!("publishing a result timed out"))?
            .context("publishing a result failed")?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                anyhow::bail!(
                    "result returned by the broker: {} {}",
                    returned.reply_code,
                    returned.reply_text
                )
            }
            other => anyhow::bail!("result not confirmed: {other:?}"),
        }
    }
}

/// True when `run` carries an `expiresAt` before `now` (contract, section
/// 15); a message without one, or with one that cannot be read, has not expired.
pub fn expired(run: &RerunMessage, now: chrono::DateTime<Utc>) -> bool {
    run.expires_at
        .as_deref()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .is_some_and(|at| at < now)
}

/// Runs the command for `run` (or passes at once without one).
pub async fn execute(options: &RunnerOptions, run: &RerunMessage, body: &[u8]) -> Outcome {
    execute_tracked(options, run, body, |_| {}).await
}

/// [`execute`], calling `on_start` with the command's process group once it runs.
async fn execute_tracked(
    options: &RunnerOptions,
    run: &RerunMessage,
    body: &[u8],
    on_start: impl FnOnce(u32),
) -> Outcome {
    let started = Instant::now();
    let Some(command) = &options.command else {
        return Outcome {
            status: PairStatus::Passed,
            duration_ms: 0,
            detail: None,
        };
    };
    let finished = run_command(
        command,
        run,
        body,
        Duration::from_secs(options.timeout_secs),
        on_start,
    )
    .await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, output) = match finished {
        Ok((true, output)) => (PairStatus::Passed, output),
        Ok((false, output)) => (PairStatus::Failed, output),
        Err(e) => (PairStatus::Error, format!("{e:#}").into_bytes()),
    };
    Outcome {
        status,
        duration_ms,
        detail: tail(&output),
    }
}

/// `sh -c command` with the message in its environment and on stdin; the
/// exit status (true for 0) and the output (stdout then stderr). Errors: it
/// cannot start, or runs past `timeout` (then it is killed).
async fn run_command(
    command: &str,
    run: &RerunMessage,
    body: &[u8],
    timeout: Duration,
    started: impl FnOnce(u32),
) -> anyhow::Result<(bool, Vec<u8>)> {
    let mut shell = tokio::process::Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .envs(environment(run))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // a process group of its own, so that a timeout kills the whole test,
    // not only the shell that started it
    #[cfg(unix)]
    shell.process_group(0);
    // the shell dies with the runner, even a SIGKILLed one (Linux)
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        shell.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = shell.spawn().context("the command cannot start")?;
    let group = ProcessGroup(child.id());
    if let Some(id) = child.id() {
        started(id);
    }
    let mut stdin = child.stdin.take();
    let body = body.to_vec();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // a command that does not read its input closes the pipe early
            let _ = stdin.write_all(&body).await;
        }
        drop(stdin);
    };
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let work = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (_, read_out, read_err, status) = tokio::join!(
            feed,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        read_out?;
        read_err?;
        out.extend_from_slice(&err);
        anyhow::Ok((status?.success(), out))
    };
    let finished = tokio::time::timeout(timeout, work).await;
    drop(group);
    match finished {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "the command ran past {} s and was killed",
            timeout.as_secs()
        ),
    }
}

/// The process group of a command (its shell's pid): every process still in
/// it is killed (SIGKILL) when this is dropped — after a timeout, and also
/// after a normal exit, so that nothing the test left in the background
/// outlives its pair.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            kill_group(group);
        }
    }
}

/// The `PQ_*` variables of a message (contract, section 12).
pub fn environment(run: &RerunMessage) -> Vec<(&'static str, String)> {
    vec![
        ("PQ_MESSAGE_ID", run.message_id.clone()),
        ("PQ_EXECUTION_ID", run.execution_id.to_string()),
        ("PQ_PLAN_ID", run.plan_id.to_string()),
        ("PQ_SCENARIO_ID", run.scenario_id.to_string()),
        ("PQ_ENVIRONMENT_ID", run.environment_id.to_string()),
        ("PQ_ATTEMPT", run.attempt.to_string()),
        ("PQ_FRAMEWORK_TYPE", run.framework_type.clone()),
        ("PQ_SCENARIO_NAME", run.scenario.name.clone()),
        ("PQ_ENVIRONMENT_NAME", run.environment.name.clone()),
        ("PQ_PLATFORM", run.environment.platform.clone()),
        ("PQ_VERSION", run.environment.version.clone()),
    ]
}

/// The last [`DETAIL_BYTES`] of `output` as text (cut at a character
/// boundary), or `None` when empty.
fn tail(output: &[u8]) -> Option<String> {
    if output.is_empty() {
        return None;
    }
    let text = crate::results::message::storable_text(String::from_utf8_lossy(output).into_owned());
    let mut start = text.len().saturating_sub(DETAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Some(text[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EnvironmentInfo, ScenarioInfo};

    fn message() -> RerunMessage {
        RerunMessage {
            message_id: "m-1".into(),
            execution_id: 5012,
            source_execution_id: 4980,
            plan_id: 614,
            user_id: 13,
            framework_type: "APPIUM".into(),
            scenario_id: 111,
            environment_id: 222,
            attempt: 2,
            requested_at: "2026-11-30T09:00:00Z".into(),
            scenario: ScenarioInfo {
                name: "Login".into(),
            },
            environment: EnvironmentInfo {
                name: "Pixel 8".into(),
                platform: "ANDROID".into(),
                version: "14".into(),
            },
            expires_at: None,
        }
    }

    fn options(command: Option<&str>, timeout_secs: u64) -> RunnerOptions {
        RunnerOptions {
            framework_type: "APPIUM".into(),
            command: command.map(str::to_owned),
            concurrency: 1,
            timeout_secs,
        }
    }

    #[tokio::test]
    async fn without_a_command_every_pair_passes() {
        let outcome = execute(&options(None, 5), &message(), b"{}").await;
        assert_eq!(outcome.status, PairStatus::Passed);
    }

    #[tokio::test]
    async fn exit_status_decides_and_the_command_sees_the_message() {
        let run = message();
        let command = r#"read body; echo "$PQ_SCENARIO_ID/$PQ_ENVIRONMENT_ID/$PQ_ATTEMPT $PQ_ENVIRONMENT_NAME $body"; test "$PQ_SCENARIO_ID" = 112"#;
        let outcome = execute(&options(Some(command), 5), &run, b"the-body\n").await;
        assert_eq!(outcome.status, PairStatus::Failed);
        assert_eq!(
            outcome.detail.as_deref(),
            Some("111/222/2 Pixel 8 the-body\n")
        );
        let pass = execute(&options(Some("exit 0"), 5), &run, b"").await;
        assert_eq!((pass.status, pass.detail), (PairStatus::Passed, None));
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_an_error_and_its_children_are_killed() {
        let marker = format!("pq-runner-test-{}", uuid::Uuid::new_v4().simple());
        let command = format!("sh -c 'sleep 300; echo {marker}' & wait");
        let outcome = execute(&options(Some(&command), 0), &message(), b"").await;
        assert_eq!(outcome.status, PairStatus::Error);
        assert!(outcome.detail.unwrap().contains("killed"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .expect("pgrep runs");
        assert!(
            left.stdout.is_empty(),
            "a child of the timed-out command still runs: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    }

    #[tokio::test]
    async fn a_nul_in_the_output_is_reported_as_a_replacement_character() {
        let outcome = execute(&options(Some(r"printf 'a\000b'"), 5), &message(), b"").await;
        assert_eq!(outcome.detail.as_deref(), Some("a\u{FFFD}b"));
    }

    #[test]
    fn a_message_past_its_expires_at_has_expired() {
        let now = Utc::now();
        let mut run = message();
        assert!(!expired(&run, now), "no expiresAt");
        run.expires_at = Some("2026-11-30T09:00:00Z".into());
        let before = chrono::DateTime::parse_from_rfc3339("2026-11-30T08:59:59Z").unwrap();
        assert!(!expired(&run, before.to_utc()));
        assert!(expired(&run, now));
    }

    #[test]
    fn a_missing_queue_names_the_exchange_and_serve() {
        let amqp = crate::config::Config::from_lookup(|_| None).unwrap().amqp;
        let e = anyhow::anyhow!("NOT_FOUND - no queue 'scenario-runs.APPIUM' in vhost '/'")
            .context("consuming scenario-runs.APPIUM");
        let hint = missing_queue_hint(&e, &amqp, "APPIUM").unwrap();
        assert!(hint.contains("AMQP_EXCHANGE (scenario-runs)"), "{hint}");
        assert!(hint.contains("plan-queue serve"), "{hint}");
        assert!(missing_queue_hint(&anyhow::anyhow!("refused"), &amqp, "APPIUM").is_none());
    }

    #[test]
    fn detail_keeps_the_last_4_kib() {
        let long = "é".repeat(3000);
        let detail = tail(long.as_bytes()).unwrap();
        assert!(detail.len() <= DETAIL_BYTES && detail.len() >= DETAIL_BYTES - 1);
        assert!(long.ends_with(&detail));
        assert_eq!(tail(b""), None);
    }

    #[test]
    fn reported_ids_are_remembered_and_the_oldest_forgotten() {
        let mut reported = Reported::default();
        reported.insert("a".into());
        assert!(reported.contains("a"));
        for i in 0..REMEMBERED {
            reported.insert(i.to_string());
        }
        assert!(!reported.contains("a"));
        assert!(reported.contains(&(REMEMBERED - 1).to_string()));
    }
}
