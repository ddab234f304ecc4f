//! The `plan-queue` command line (contract, section 4).

use anyhow::Context;
use clap::{Parser, Subcommand};
use plan_queue::config::Config;
use plan_queue::runner::{self, RunnerOptions};
use plan_queue::smoke::{self, SmokeOptions};
use plan_queue::startup::Application;
use plan_queue::watch::{self, EventsOptions};
use plan_queue::{auth, db, page, seed};
use std::path::PathBuf;

/// Reruns scenario–environment pairs of a test plan through RabbitMQ.
#[derive(Parser)]
#[command(name = "plan-queue", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, declare the AMQP topology, serve HTTP on BIND_ADDR.
    ///
    /// Every setting is an environment variable (or the flag beside it).
    Serve(Box<Config>),
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Upsert a fixture file (running it twice changes nothing).
    Seed {
        /// The fixture, e.g. fixtures/demo.json.
        #[arg(long)]
        file: PathBuf,
    },
    /// Print an HS256 JWT signed with JWT_SECRET.
    Token {
        /// The user the token speaks for (its `sub`).
        #[arg(long)]
        user_id: i64,
        /// An authority to grant; repeatable. Default: PLAN_RUN.
        #[arg(long = "authority")]
        authorities: Vec<String>,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Print a link to the page at BIND_ADDR that signs in with the token
        /// (`http://<BIND_ADDR>/#token=…`) instead of the bare token.
        #[arg(long)]
        link: bool,
    },
    /// Check a live deployment: readiness, the OpenAPI document, a dry-run
    /// rerun that must validate, an unknown plan that must answer 1000.
    /// Triggers no test run. Exit status 0 when every check passes, else 1.
    Smoke(SmokeOptions),
    /// Consume <exchange>.<T>, run a command per pair, publish its results
    /// to <exchange>.results (contract, section 12). For tests and demos.
    Runner(RunnerOptions),
    /// Print the events published to <exchange>.events (execution.finished,
    /// …), one line each: `<routing key> <body>`. Until SIGINT/SIGTERM or --count.
    Events(EventsOptions),
}

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,tracing::span=warn"),
    )
    .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli.command) {
        // one line: libpq's messages span several
        let text = format!("{e:#}");
        eprintln!(
            "plan-queue: {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => serve(config.checked()?),
        Command::Migrate => db::migrate(&Config::from_env()?.database.url),
        Command::Seed { file } => {
            let config = Config::from_env()?;
            let fixture = seed::Fixture::from_file(&file)?;
            db::migrate(&config.database.url)?;
            let mut conn = db::connect(&config.database.url)?;
            let report = fixture.upsert(&mut conn)?;
            println!("seeded {}: {report}", file.display());
            Ok(())
        }
        Command::Token {
            user_id,
            mut authorities,
            ttl_secs,
            link,
        } => {
            let config = Config::from_env()?;
            if config.tokens.public_key_file.is_some() || config.tokens.jwks_file.is_some() {
                eprintln!(
                    "plan-queue: warning: JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE is set: \
                     `serve` will refuse this HS256 token"
                );
            }
            if authorities.is_empty() {
                authorities.push(auth::PLAN_RUN.to_owned());
            }
            let token = auth::issue_token(
                config.require_jwt_secret()?,
                user_id,
                &authorities,
                ttl_secs,
            )?;
            if link {
                println!("{}", page::sign_in_link(&config.http.bind_addr, &token));
            } else {
                println!("{token}");
            }
            Ok(())
        }
        Command::Smoke(options) => run_smoke(options),
        Command::Runner(options) => {
            let config = Config::from_env()?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(runner::run(config.amqp, options))
        }
        Command::Events(options) => {
            let config = Config::from_env()?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(watch::run(config.amqp, options))
        }
    }
}

/// Prints one verdict line per check; fails (exit 1) if any check failed.
fn run_smoke(options: SmokeOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let verdicts = runtime.block_on(smoke::run(&options))?;
    for verdict in &verdicts {
        println!("{verdict}");
    }
    let failed = verdicts.iter().filter(|v| !v.passed).count();
    anyhow::ensure!(
        failed == 0,
        "smoke: {failed} of {} checks failed",
        verdicts.len()
    );
    println!(
        "smoke: all {} checks passed against {}",
        verdicts.len(),
        options.url
    );
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    config.token_key_source()?;
    db::migrate(&config.database.url)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let application = Application::build(config.clone(), true)?;
        log::info!(
            "plan-queue listening on {} (exchange {}, framework types {})",
            config.http.bind_addr,
            config.amqp.exchange,
            config.amqp.framework_types.join(",")
        );
        application.run_until_stopped().await
    })
}
