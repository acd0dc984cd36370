//! The command line. Names are part of the contract (DESIGN.md): `run`, `demo`, `config check`,
//! `sessions list|show`, `replay`, `journal verify|checkpoint|public-key`, `identity hash-key`.
//!
//! Exit codes: 0 success; 1 the journal failed verification; 2 any other error.

mod config_check;
mod demo;
pub mod demo_llm;
mod har;
mod journal_cmd;
mod pg_transcript;
mod replay;
mod run;
mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "airlock", version, about = "Layer-7 gateway with a tamper-evident session journal")]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `airlock=debug`.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start the gateway with a demo upstream and an embedded config, and print what to try.
    Demo {
        /// Where the demo journal lives.
        #[arg(long, default_value = "./airlock-demo")]
        data_dir: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Search the journal's sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Replay a session from the journal.
    Replay {
        /// Session id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
        /// Keep the original timing between frames.
        #[arg(long)]
        pace: bool,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Journal integrity tools.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Identity tools.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Read an API key from standard input (first line) and print the `sha256:` form that
    /// `[[identity.api_key]]` takes. The key itself never goes into the config.
    HashKey,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate everything startup would (files, certificates, keys) without binding.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions, oldest first.
    List {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only principals whose name contains this (`alice`, `oidc:corp/`, `mtls:`).
        #[arg(long)]
        principal: Option<String>,
        /// Started at or after: RFC 3339 time or a span back from now (15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Started before: RFC 3339 time or a span back from now.
        #[arg(long)]
        until: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Show one session's details.
    Show {
        /// Session id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: JournalArgs,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Recompute the hash chain and check every checkpoint signature. Exit 0 only if intact.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// A checkpoint exported earlier (`journal checkpoint --export`): detects a cut tail.
        #[arg(long)]
        anchor: Option<PathBuf>,
        /// File with the trusted signing public key (hex). Default: the journal's own.
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Print or export the latest signed checkpoint.
    Checkpoint {
        /// Write it to this file, to keep somewhere else.
        #[arg(long)]
        export: Option<PathBuf>,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Print or export the checkpoint signing public key (hex).
    PublicKey {
        /// Write it to this file.
        #[arg(long)]
        export: Option<PathBuf>,
        #[command(flatten)]
        journal: JournalArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReplayFormat {
    /// A transcript: timestamps, directions, printable bytes, the rest hex-escaped.
    Text,
    /// One JSON object per line and frame, payload base64.
    Json,
    /// HTTP sessions: a HAR 1.2 document (browser developer tools import it).
    Har,
}

/// Where a read-only command finds the journal.
#[derive(Debug, Clone, Args)]
struct JournalArgs {
    /// Journal data directory. Default: the config's `journal.data_dir`, else `./airlock-data`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Take the data directory and key locations from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Master key that unwraps session keys. Default: the config's, else `<data-dir>/keys/master.key`.
    #[arg(long)]
    master_key: Option<PathBuf>,
}

impl JournalArgs {
    fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cfg = self.config.as_deref().map(Config::load).transpose()?;
        let data_dir = match (&self.data_dir, &cfg) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => c.data_dir(),
            (None, None) => PathBuf::from("./airlock-data"),
        };
        let master = match (&self.master_key, &cfg) {
            (Some(k), _) => k.clone(),
            (None, Some(c)) => c
                .build()
                .map(|s| s.journal.master_key)
                .unwrap_or_else(|_| crate::journal::default_master_key(&data_dir)),
            (None, None) => crate::journal::default_master_key(&data_dir),
        };
        Ok((data_dir, master))
    }

    fn open(&self) -> anyhow::Result<(crate::journal::Store, PathBuf)> {
        let (data_dir, master) = self.resolve()?;
        let store = crate::journal::Store::open_reader(&crate::journal::db_path(&data_dir))?;
        Ok((store, master))
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Demo { data_dir } => demo::demo(&data_dir),
        Command::Config { command: ConfigCommand::Check { config } } => config_check::check(&config),
        Command::Sessions { command: SessionsCommand::List { route, principal, since, until, json, journal } } => {
            sessions::list(&journal, route, principal, since.as_deref(), until.as_deref(), json)
        }
        Command::Sessions { command: SessionsCommand::Show { id, json, journal } } => {
            sessions::show(&journal, &id, json)
        }
        Command::Replay { id, format, pace, journal } => replay::replay(&journal, &id, format, pace),
        Command::Journal { command: JournalCommand::Verify { json, anchor, public_key, journal } } => {
            journal_cmd::verify(&journal, json, anchor.as_deref(), public_key.as_deref())
        }
        Command::Journal { command: JournalCommand::Checkpoint { export, journal } } => {
            journal_cmd::checkpoint(&journal, export.as_deref())
        }
        Command::Journal { command: JournalCommand::PublicKey { export, journal } } => {
            journal_cmd::public_key(&journal, export.as_deref())
        }
        Command::Identity { command: IdentityCommand::HashKey } => hash_key(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn hash_key() -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let key = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!key.is_empty(), "no key on standard input");
    println!("{}", crate::identity::apikey::format_hash(key));
    Ok(ExitCode::SUCCESS)
}

fn parse_session_id(id: &str) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id)
        .map_err(|_| anyhow::anyhow!("`{id}` is not a session id (a UUID as printed by `airlock sessions list`)"))
}

/// A multi-threaded runtime for the commands that serve traffic.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
