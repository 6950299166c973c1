//! `aigw`: the AI gateway's control plane.

mod bootstrap;
mod credentials;
mod demo;
mod error;
mod kube_source;
mod load;
mod mint;
mod otel;
mod proto;
mod ratelimit;
mod resources;
mod run;
mod standalone;
mod traffic;
mod translate;
mod validate;
mod xds;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aigw",
    version,
    about = "AI gateway: one OpenAI-compatible endpoint in front of many LLM providers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Kubernetes mode: watch the cluster's resources, serve xDS, credentials and rate limits.
    Controller(kube_source::controller::ControllerArgs),
    /// Serve the resources in FILEs (or a configuration from the environment) through Envoy.
    Run(RunArgs),
    /// Print the Envoy configuration FILEs translate to, and start nothing.
    Translate {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check FILEs against the Envoy AI Gateway CRDs' rules, as the Kubernetes API server would.
    Validate {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// Point a hostname at a local address: HOST:PORT=ADDRESS:PORT (repeatable).
    #[arg(long = "resolve", value_parser = standalone::parse_resolve)]
    resolve: Vec<(standalone::HostPort, standalone::HostPort)>,
    /// Bind a Gateway listener port elsewhere: GATEWAY_PORT=LOCAL_PORT (repeatable).
    #[arg(long = "map-port", value_parser = standalone::parse_port_map)]
    map_port: Vec<(u16, u16)>,
    /// A Secret's apiKey: [NAMESPACE/]NAME=env:VAR or =file:PATH (repeatable).
    #[arg(long = "secret", value_parser = standalone::parse_secret_arg)]
    secrets: Vec<standalone::SecretArg>,
    /// Address the listeners bind.
    #[arg(long, default_value = "127.0.0.1")]
    listen_address: String,
    /// The built filter.
    #[arg(long, env = "AIGW_WASM", default_value = "target/aigw_filter.wasm")]
    wasm: PathBuf,
    /// Send every request through the filter's upstream role (a wasm
    /// context per attempt), also on rules with one backend that the
    /// listener's filter serves directly by default (faster; see README).
    #[arg(long)]
    no_direct: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
    /// The Envoy binary.
    #[arg(long, env = "AIGW_ENVOY", default_value = "envoy")]
    envoy: PathBuf,
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Envoy worker threads (default: one per core).
    #[arg(long)]
    concurrency: Option<u32>,
    #[arg(long, default_value = "warning")]
    envoy_log_level: String,
    /// JSON-lines access log (model, backend, status, tokens) written by Envoy
    /// (default: access.log in the work dir, unless --traffic quiet).
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// What the terminal shows of the traffic: a line per request, a summary
    /// every 10 s, or nothing.
    #[arg(long, value_enum, default_value = "lines")]
    traffic: traffic::TrafficMode,
    /// Trace requests with Envoy's OpenTelemetry tracer, exporting to this
    /// collector: OTLP/HTTP with http://HOST:PORT[/v1/traces], OTLP/gRPC with
    /// grpc://HOST:PORT. Spans carry GenAI attributes (models, provider,
    /// tokens), never message content.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Where the Envoy bootstrap is written.
    #[arg(long, default_value = ".work/aigw")]
    work_dir: PathBuf,
    /// Redis URL for rate-limit counters, e.g. redis://127.0.0.1:6379 (default: in memory).
    #[arg(long, env = "AIGW_REDIS")]
    redis: Option<String>,
    /// Refuse requests when rate limits cannot be checked (rate-limit service or Redis
    /// unreachable). Default: fail open, allow and log.
    #[arg(long)]
    rate_limit_fail_closed: bool,
    /// Reserve-then-settle token budgets: at admission reserve the request's
    /// max_tokens (or max_completion_tokens, else this many output tokens)
    /// plus an input estimate (body bytes / 4), refuse with 429 when that does
    /// not fit, and settle to the real usage when the answer ends. Without
    /// this flag tokens are charged after the answer, like Envoy AI Gateway.
    #[arg(
        long,
        env = "AIGW_RATE_LIMIT_RESERVE",
        value_name = "DEFAULT_OUTPUT_TOKENS",
        num_args = 0..=1,
        default_missing_value = "1024"
    )]
    rate_limit_reserve: Option<u64>,
    /// Standalone only: also trust this PEM CA for upstream TLS (added to
    /// the system CA bundle), e.g. a test or corporate CA.
    #[arg(long)]
    extra_ca: Option<PathBuf>,
    /// Seconds the filter keeps upstream credentials it fetched from the
    /// controller before asking again (a refreshed token reaches it within
    /// this time).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    credential_ttl: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            let config = run::RunConfig {
                files: args.files,
                secrets: args.common.secrets,
                resolve: args.common.resolve.into_iter().collect(),
                port_map: args.common.map_port.into_iter().collect(),
                listen_address: args.common.listen_address,
                admin_port: args.admin_port,
                envoy: args.envoy,
                wasm: args.common.wasm,
                work_dir: args.work_dir,
                concurrency: args.concurrency,
                envoy_log_level: args.envoy_log_level,
                access_log: args.access_log,
                traffic: args.traffic,
                otlp_endpoint: args.otlp_endpoint,
                redis: args.redis,
                rate_limit_fail_closed: args.rate_limit_fail_closed,
                rate_limit_reserve: args.rate_limit_reserve,
                ca_file: None,
                credential_ttl: Some(args.credential_ttl),
                no_direct: args.common.no_direct,
            };
            match args.extra_ca {
                Some(extra) => match std::fs::create_dir_all(&config.work_dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| run::ca_bundle_with(&extra, &config.work_dir))
                {
                    Ok(path) => {
                        run::run(run::RunConfig {
                            ca_file: Some(path),
                            ..config
                        })
                        .await
                    }
                    Err(e) => Err(e),
                },
                None => run::run(config).await,
            }
        }
        Command::Controller(args) => kube_source::controller::run(args).await,
        Command::Translate { files, common } => translate_command(files, common),
        Command::Validate { files } => validate::command(&files),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aigw: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn translate_command(files: Vec<PathBuf>, common: CommonArgs) -> anyhow::Result<()> {
    let config = run::RunConfig {
        files,
        secrets: common.secrets,
        resolve: common.resolve.into_iter().collect(),
        port_map: common.map_port.into_iter().collect(),
        listen_address: common.listen_address,
        admin_port: 9901,
        envoy: PathBuf::from("envoy"),
        wasm: common.wasm,
        work_dir: PathBuf::new(),
        concurrency: None,
        envoy_log_level: String::new(),
        access_log: None,
        traffic: traffic::TrafficMode::Quiet,
        otlp_endpoint: None,
        redis: None,
        rate_limit_fail_closed: false,
        rate_limit_reserve: None,
        ca_file: None,
        credential_ttl: None,
        no_direct: common.no_direct,
    };
    let (resources, mut diagnostics) = standalone::load(&config.files, &config.secrets);
    let translation = translate::translate(&resources, &run::options(&config, 0, 1));
    let (_, encode_errors) = run::snapshot(&translation, 1);
    diagnostics.extend(translation.diagnostics.iter().cloned());
    diagnostics.extend(encode_errors);
    let out = serde_json::json!({
        "listeners": translation.listeners,
        "routes": translation.routes,
        "clusters": translation.clusters,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    for d in &diagnostics {
        eprintln!("aigw: {d}");
    }
    if error::has_errors(&diagnostics) {
        anyhow::bail!("the configuration has errors");
    }
    Ok(())
}
