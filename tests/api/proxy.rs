//! A TCP proxy between the service and PostgreSQL or RabbitMQ that can
//! refuse, reset or black-hole connections, so faults are injected without
//! disturbing the servers other tests use.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Forward bytes both ways.
    Forward,
    /// Close new connections at once (as if nothing listened).
    Refuse,
    /// Accept new connections and send nothing anywhere; existing connections
    /// stop forwarding (TCP stays up, no answer ever comes).
    BlackHole,
    /// Forward what the client sends, drop every reply: the server acts
    /// (e.g. enqueues and confirms a message) but the client never learns it.
    DropReplies,
}

struct State {
    mode: Mode,
    connections: Vec<JoinHandle<()>>,
}

/// A running proxy on `127.0.0.1:<port>`.
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` in [`Mode::Forward`].
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Forward,
            connections: Vec::new(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = shared.lock().unwrap().mode;
                let state = shared.clone();
                let task = tokio::spawn(async move {
                    match mode {
                        Mode::Refuse => drop(client),
                        Mode::BlackHole => swallow(client).await,
                        Mode::Forward | Mode::DropReplies => forward(client, target, state).await,
                    }
                });
                let mut guard = shared.lock().unwrap();
                guard.connections.retain(|t| !t.is_finished());
                guard.connections.push(task);
            }
        });
        Proxy {
            port,
            state,
            accept,
        }
    }

    /// Sets the mode. New connections follow it; existing ones are closed by
    /// `Refuse`, go silent (bytes read and dropped both ways) under
    /// `BlackHole`, and forward again under `Forward`.
    pub fn set(&self, mode: Mode) {
        let mut state = self.state.lock().unwrap();
        state.mode = mode;
        if mode == Mode::Refuse {
            for task in state.connections.drain(..) {
                task.abort();
            }
        }
    }

    /// Drops every open connection (the peers see a reset) and keeps the mode.
    pub fn reset_all(&self) {
        let mut state = self.state.lock().unwrap();
        for task in state.connections.drain(..) {
            task.abort();
        }
    }

    /// An `amqp://` URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A `postgres://` URL for database `name` through this proxy.
    pub fn postgres_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn swallow(mut client: TcpStream) {
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut client, &mut sink).await;
    // hold the socket open until aborted
    std::future::pending::<()>().await;
}

async fn forward(client: TcpStream, target: SocketAddr, state: Arc<Mutex<State>>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, state.clone(), true) => {}
        _ = pump(server_read, client_write, state, false) => {}
    }
}

/// Copies `from` → `to` while the mode lets this direction through (`upstream`:
/// client → server); drops the bytes otherwise.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<Mutex<State>>,
    upstream: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mode = state.lock().unwrap().mode;
        let passes = mode == Mode::Forward || (mode == Mode::DropReplies && upstream);
        if passes && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A server on the demo fixture whose database is reached through a proxy
/// (started in [`Mode::Forward`]), with a 500 ms checkout timeout so that a
/// cut database answers quickly.
pub async fn spawn_app_behind_database_proxy() -> (crate::helpers::TestApp, Proxy) {
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut app = crate::helpers::spawn_app().await;
    let name = app.db_name.clone();
    app.restart_with(|c| {
        c.database.url = proxy.postgres_url(&name);
        c.database.checkout_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    (app, proxy)
}
