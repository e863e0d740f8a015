//! The command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;
use crate::roles::Target;

/// Cairn: long-term storage and one global PromQL endpoint for Prometheus.
///
/// Point Prometheus's remote_write at http://HOST:9009/api/v1/push and
/// Grafana's Prometheus data source at http://HOST:9009.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every role in one process: remote write receiver, ingester,
    /// query API. Data under --data.dir; no other service needed.
    All(RunArgs),
    /// Run an ingester of a cluster: WAL and head, its gRPC push and query
    /// service, and membership of the Raft ring (--ring.join).
    Ingester(RunArgs),
    /// Run a distributor of a cluster: the remote write receiver, writing
    /// each series to --distributor.replication-factor ingesters.
    Distributor(RunArgs),
    /// Run a querier of a cluster: the Prometheus query API over every
    /// ingester's head and the blocks in object storage.
    Querier(RunArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the default configuration as YAML.
    Defaults,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// YAML configuration file. Every key can also be set by its flag or
    /// environment variable, which take precedence.
    #[arg(long = "config.file", env = "CAIRN_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub config: Config,
}

/// Stack of every runtime thread: 32 MiB. PromQL evaluation recurses once
/// per level of the expression, about 12 KiB a level in a debug build and
/// less in a release build, so the default depth limit of 500 uses under a
/// fifth of it.
pub const THREAD_STACK_BYTES: usize = 32 << 20;

pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let (target, args, sub) = match &cli.command {
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", Config::defaults_yaml());
            return ExitCode::SUCCESS;
        }
        Command::All(a) => (Target::All, a, matches.subcommand_matches("all")),
        Command::Ingester(a) => (Target::Ingester, a, matches.subcommand_matches("ingester")),
        Command::Distributor(a) => (Target::Distributor, a, matches.subcommand_matches("distributor")),
        Command::Querier(a) => (Target::Querier, a, matches.subcommand_matches("querier")),
    };
    let Some(sub) = sub else {
        eprintln!("cairn: error: missing subcommand arguments");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(&args.config, sub, args.config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(cfg.server.log_level, cfg.server.log_format);
    // Every thread of the runtime, workers and blocking ones, gets a stack
    // deep enough for the deepest query the expression limits allow
    // (`--query.max-expression-depth`); untouched stack costs no memory.
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().thread_stack_size(THREAD_STACK_BYTES).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cairn: error: starting the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(crate::process::run(target, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cairn failed");
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
