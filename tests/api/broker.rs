//! A private RabbitMQ node for tests that restart the broker: the machine's
//! own node serves the other tests and must not be restarted. Started with
//! the installed `rabbitmq-server` on a free port, its own node name and
//! data directory; stopped and removed on drop.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl PrivateBroker {
    /// Starts a node, or returns `None` (with the reason printed) where
    /// `rabbitmq-server` is not installed.
    pub fn start() -> Option<PrivateBroker> {
        if Command::new("rabbitmq-server")
            .arg("--help")
            .output()
            .is_err()
        {
            println!("skipped: rabbitmq-server is not installed here");
            return None;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let node = format!("pq{}@localhost", &id[..12]);
        let (port, dist_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("plan-queue-broker-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        // the server scripts run as the rabbitmq user where it exists
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .status()
            .unwrap();
        assert!(status.success(), "rabbitmq-server -detached failed");
        let broker = PrivateBroker { node, port, dir };
        broker.wait_until_up();
        Some(broker)
    }

    fn wait_until_up(&self) {
        let started = Instant::now();
        while !answers(self.port) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "private broker did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The AMQP URL of this node.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Restarts the RabbitMQ application of the node (its queues are
    /// recovered from disk), waiting until it accepts connections again.
    pub fn restart(&self) {
        for action in ["stop_app", "start_app"] {
            let status = Command::new("rabbitmqctl")
                .args(["-q", "-n", &self.node, action])
                .status()
                .unwrap();
            assert!(status.success(), "rabbitmqctl {action}");
        }
        self.wait_until_up();
    }
}

impl PrivateBroker {
    /// `rabbitmqctl set_vm_memory_high_watermark <fraction>`: a tiny fraction
    /// raises the memory alarm (publishing connections are blocked), 0.4
    /// (the default) clears it again.
    pub fn set_memory_watermark(&self, fraction: &str) {
        let status = Command::new("rabbitmqctl")
            .args([
                "-q",
                "-n",
                &self.node,
                "set_vm_memory_high_watermark",
                fraction,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "rabbitmqctl set_vm_memory_high_watermark");
    }

    /// The AMQP connections the node holds now whose client-given
    /// connection name contains `name` (`""`: all), blocked ones included.
    pub fn connections(&self, name: &str) -> usize {
        let output = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node, "list_connections"])
            .args(["--no-table-headers", "state", "client_properties"])
            .output()
            .unwrap();
        assert!(output.status.success(), "rabbitmqctl list_connections");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty() && line.contains(name))
            .count()
    }
}

impl PrivateBroker {
    /// `rabbitmqctl list_queues name arguments` of the node: one line per
    /// queue, its name then its declared arguments.
    pub fn queue_arguments(&self) -> String {
        let output = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node, "list_queues"])
            .args(["--no-table-headers", "name", "arguments"])
            .output()
            .unwrap();
        assert!(output.status.success(), "rabbitmqctl list_queues");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node, "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`PrivateBroker::start`] on the blocking pool.
pub async fn start_private_broker() -> Option<PrivateBroker> {
    tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap()
}

/// [`PrivateBroker::restart`] on the blocking pool; hands the node back.
pub async fn restart_private_broker(broker: PrivateBroker) -> PrivateBroker {
    tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap()
}
