//! `aigw run`: serves xDS and credentials, starts Envoy, watches the files.

use crate::bootstrap::{bootstrap, BootstrapPorts, CONTROLLER_CLUSTER};
use crate::credentials::CredentialService;
use crate::error::{has_errors, Diagnostic, Severity};
use crate::proto;
use crate::standalone::{self, SecretArg};
use crate::translate::{envoy::WasmCode, translate, AwsEnvironment, Options, Translation};
use crate::xds::{AdsServer, Reply, Snapshot};
use aigw_filter::config::CredentialSource;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const TOKEN_ENV: &str = "AIGW_CREDENTIAL_TOKEN";

#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub files: Vec<PathBuf>,
    pub secrets: Vec<SecretArg>,
    pub resolve: BTreeMap<(String, u16), (String, u16)>,
    pub port_map: BTreeMap<u16, u16>,
    pub listen_address: String,
    pub admin_port: u16,
    pub envoy: PathBuf,
    pub wasm: PathBuf,
    pub work_dir: PathBuf,
    pub concurrency: Option<u32>,
    pub envoy_log_level: String,
    pub access_log: Option<PathBuf>,
    /// What `aigw run` prints of the traffic (read from the access log).
    pub traffic: crate::traffic::TrafficMode,
    /// OTLP/HTTP collector for Envoy's OpenTelemetry tracer, if any.
    pub otlp_endpoint: Option<String>,
    /// Redis for rate-limit counters; in memory without it.
    pub redis: Option<String>,
    /// Refuse requests when rate limits cannot be checked (default: allow).
    pub rate_limit_fail_closed: bool,
    /// Reserve-then-settle token budgets, with this default output reservation.
    pub rate_limit_reserve: Option<u64>,
    /// CA bundle upstream TLS trusts instead of the system's (`aigw run`
    /// writes the system bundle plus `--extra-ca` here).
    pub ca_file: Option<PathBuf>,
    /// Seconds the filter keeps fetched credentials (default 30).
    pub credential_ttl: Option<u64>,
    /// Every request goes through the upstream role (see `translate::direct`).
    pub no_direct: bool,
}

/// How Envoy drains the connections of a listener it replaces: each gets
/// `Connection: close` (HTTP/2: GOAWAY) on its next answer instead of
/// Envoy's default of ever more of them over 10 minutes, so a client on a
/// kept-alive connection sees a new configuration (a model added, a rule
/// now served directly) after one request, and idle ones go after 15 s.
pub const ENVOY_DRAIN_ARGS: [&str; 4] = ["--drain-strategy", "immediate", "--drain-time-s", "15"];

/// Everything `translate` needs besides the resources, for one run.
pub fn options(config: &RunConfig, credential_port: u16, version: u64) -> Options {
    Options {
        wasm: WasmCode {
            path: config.wasm.display().to_string(),
            env_keys: vec![TOKEN_ENV.to_string()],
        },
        listen_address: config.listen_address.clone(),
        port_map: config.port_map.clone(),
        resolve: config.resolve.clone(),
        credential_source: CredentialSource {
            cluster: CONTROLLER_CLUSTER.into(),
            authority: format!("127.0.0.1:{credential_port}"),
            path: "/v1/credentials".into(),
            token_env: TOKEN_ENV.into(),
            ttl_seconds: config.credential_ttl.unwrap_or(30),
        },
        ca_file: config
            .ca_file
            .as_ref()
            .map_or_else(system_ca_file, |p| p.display().to_string()),
        access_log: config.access_log.as_ref().map(|p| p.display().to_string()),
        config_version: version,
        rate_limit: crate::translate::ratelimit::Settings {
            failure_mode_deny: config.rate_limit_fail_closed,
            reserve_output_tokens: config.rate_limit_reserve,
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        aws_environment: aws_environment(),
        direct: !config.no_direct,
        mint: crate::mint::MintEnvironment::from_env(|name| std::env::var(name).ok()),
    }
}

/// AWS credentials from the controller's environment, if complete.
fn aws_environment() -> Option<AwsEnvironment> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(AwsEnvironment {
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
        session_token: var("AWS_SESSION_TOKEN"),
    })
}

/// Writes the system CA bundle followed by `extra` into `work_dir` and
/// returns its path: upstream TLS then also trusts the extra CA.
pub fn ca_bundle_with(extra: &std::path::Path, work_dir: &std::path::Path) -> Result<PathBuf> {
    let mut bundle = std::fs::read(system_ca_file()).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    let extra = std::fs::read(extra)
        .with_context(|| format!("cannot read --extra-ca {}", extra.display()))?;
    bundle.extend_from_slice(&extra);
    let path = work_dir.join("ca-bundle.pem");
    std::fs::write(&path, bundle)?;
    Ok(path.canonicalize()?)
}

fn system_ca_file() -> String {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/etc/ssl/certs/ca-certificates.crt")
    .to_string()
}

/// Encodes a translation into an xDS snapshot; a resource Envoy's schema
/// rejects becomes an error diagnostic.
pub fn snapshot(translation: &Translation, version: u64) -> (Snapshot, Vec<Diagnostic>) {
    let mut snapshot = Snapshot {
        version,
        ..Default::default()
    };
    let mut diagnostics = Vec::new();
    for (type_url, items) in [
        (proto::LISTENER, &translation.listeners),
        (proto::ROUTE, &translation.routes),
        (proto::CLUSTER, &translation.clusters),
    ] {
        let list = snapshot.resources.entry(type_url).or_default();
        for item in items {
            match proto::to_any(type_url, item) {
                Ok(any) => list.push((proto::resource_name(item), any)),
                Err(e) => diagnostics.push(Diagnostic::error(format!(
                    "internal: generated invalid Envoy config: {e}"
                ))),
            }
        }
    }
    (snapshot, diagnostics)
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        if d.severity >= Severity::Warning {
            eprintln!("aigw: {d}");
        }
    }
}

struct Loaded {
    translation: Translation,
    snapshot: Snapshot,
}

fn load(
    config: &RunConfig,
    extra_yaml: Option<&str>,
    credential_port: u16,
    version: u64,
) -> Loaded {
    let (mut resources, mut diagnostics) = standalone::load(&config.files, &config.secrets);
    if let Some(yaml) = extra_yaml {
        crate::load::load_str("(environment)", yaml, &mut resources, &mut diagnostics);
    }
    let mut translation = translate(&resources, &options(config, credential_port, version));
    let otlp = config.otlp_endpoint.as_deref();
    if let Some(endpoint) = otlp.and_then(|e| crate::otel::parse_endpoint(e).ok()) {
        for listener in &mut translation.listeners {
            crate::otel::add_tracing(listener, &endpoint);
        }
    }
    let (snapshot, more) = snapshot(&translation, version);
    diagnostics.append(&mut translation.diagnostics);
    diagnostics.extend(more);
    translation.diagnostics = diagnostics;
    Loaded {
        translation,
        snapshot,
    }
}

fn fingerprint(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
        })
        .collect()
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extra configuration when no file is given: the environment's OpenAI
/// settings, or else the built-in demo model served on `demo_port`.
fn environment_config(demo_port: u16) -> Result<(String, Vec<SecretArg>, String)> {
    let key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let base = std::env::var("OPENAI_BASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let secret = || SecretArg {
        namespace: "default".into(),
        name: "upstream-key".into(),
        from: standalone::SecretFrom::Env("OPENAI_API_KEY".into()),
    };
    if base.is_some() || key.is_some() {
        let url = base.unwrap_or_else(|| "https://api.openai.com/v1".into());
        let parsed = standalone::parse_base_url(&url).map_err(anyhow::Error::msg)?;
        let secrets = if key.is_some() {
            vec![secret()]
        } else {
            vec![]
        };
        return Ok((
            standalone::environment_yaml(&parsed, key.is_some()),
            secrets,
            format!("OpenAI-compatible upstream {url}"),
        ));
    }
    let base = standalone::BaseUrl {
        host: "127.0.0.1".into(),
        port: demo_port,
        tls: false,
        prefix: "/v1".into(),
    };
    let yaml = standalone::environment_yaml(&base, false)
        .replace("- backendRefs: [{name: upstream}]", &format!(
            "- matches: [{{headers: [{{name: x-ai-eg-model, value: {}}}]}}]\n    backendRefs: [{{name: upstream}}]",
            crate::demo::DEMO_MODEL
        ));
    Ok((
        yaml,
        vec![],
        "the built-in demo model (set OPENAI_BASE_URL or OPENAI_API_KEY, or pass -f FILE)".into(),
    ))
}

pub async fn run(mut config: RunConfig) -> Result<()> {
    if !config.wasm.is_file() {
        bail!(
            "the filter {} does not exist; build it with scripts/build-filter.sh",
            config.wasm.display()
        );
    }
    config.wasm = config.wasm.canonicalize()?;
    std::fs::create_dir_all(&config.work_dir)?;
    let otlp = match config.otlp_endpoint.as_deref() {
        Some(text) => Some(crate::otel::parse_endpoint(text).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if config.access_log.is_none() && config.traffic != crate::traffic::TrafficMode::Quiet {
        config.access_log = Some(config.work_dir.join("access.log"));
    }
    let token = random_token();

    let xds_listener = TcpListener::bind("127.0.0.1:0").await?;
    let credential_listener = TcpListener::bind("127.0.0.1:0").await?;
    let xds_port = xds_listener.local_addr()?.port();
    let credential_port = credential_listener.local_addr()?.port();
    let ratelimit_listener = TcpListener::bind("127.0.0.1:0").await?;
    let ratelimit_port = ratelimit_listener.local_addr()?.port();

    let extra = if config.files.is_empty() {
        let demo_listener = TcpListener::bind("127.0.0.1:0").await?;
        let demo_port = demo_listener.local_addr()?.port();
        tokio::spawn(async move { axum::serve(demo_listener, crate::demo::router()).await });
        let (yaml, secrets, what) = environment_config(demo_port)?;
        eprintln!("aigw: no -f FILE given; serving {what}");
        config.secrets.extend(secrets);
        config.port_map.entry(1975).or_insert(1975);
        Some(yaml)
    } else {
        None
    };

    let mut version = 1;
    let first = load(&config, extra.as_deref(), credential_port, version);
    print_diagnostics(&first.translation.diagnostics);
    if first.translation.listeners.is_empty() {
        bail!("nothing to serve: the configuration defines no usable Gateway listener");
    }
    let credentials = CredentialService::new(token.clone());
    credentials.update(first.translation.credentials.clone());
    let refresher =
        crate::mint::Refresher::new(credentials.clone(), config.credential_ttl.unwrap_or(30));
    refresher.sync(&first.translation.minted);
    // Mint before the first request can need it (failures are retried).
    refresher.first_attempts(Duration::from_secs(15)).await;
    let rate_limiter = crate::ratelimit::RateLimitServer::new(
        match &config.redis {
            Some(url) => crate::ratelimit::Store::Redis(
                crate::ratelimit::redis::RedisStore::new(url).map_err(anyhow::Error::msg)?,
            ),
            None => crate::ratelimit::Store::Memory(Default::default()),
        },
        config.rate_limit_fail_closed,
    );
    rate_limiter.update(first.translation.rate_limits.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rate_limiter.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                ratelimit_listener,
            )),
    );
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(first.snapshot));
    let ads = AdsServer::new(snapshot_rx);
    let mut replies = ads.replies();

    let xds_incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads.service())
            .serve_with_incoming(xds_incoming),
    );
    let router = credentials.router();
    tokio::spawn(async move { axum::serve(credential_listener, router).await });

    let ports = BootstrapPorts {
        admin: config.admin_port,
        xds: xds_port,
        credentials: credential_port,
        ratelimit: ratelimit_port,
    };
    let bootstrap_path = config.work_dir.join("envoy-bootstrap.json");
    let mut bootstrap = bootstrap("aigw-standalone", "127.0.0.1", &ports);
    if let (Some(endpoint), Some(clusters)) = (
        &otlp,
        bootstrap["static_resources"]["clusters"].as_array_mut(),
    ) {
        clusters.push(crate::otel::cluster(endpoint));
    }
    std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)?;
    let mut command = tokio::process::Command::new(&config.envoy);
    command
        .arg("-c")
        .arg(&bootstrap_path)
        .arg("--log-level")
        .arg(&config.envoy_log_level)
        // Envoy's default of 10 s makes access logs lag far behind traffic.
        .arg("--file-flush-interval-msec")
        .arg("1000")
        .args(ENVOY_DRAIN_ARGS)
        .arg("--base-id")
        .arg(std::process::id().to_string())
        .env(TOKEN_ENV, &token)
        .kill_on_drop(true);
    // Envoy is this process's child: if aigw is killed outright (SIGKILL,
    // OOM), the kernel sends Envoy SIGTERM, so no orphan keeps serving a
    // configuration nobody updates or holds the ports.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(n) = config.concurrency {
        command.arg("--concurrency").arg(n.to_string());
    }
    let mut envoy = command
        .spawn()
        .with_context(|| format!("cannot start Envoy from {}", config.envoy.display()))?;
    if let Some(log) = &config.access_log {
        tokio::spawn(crate::traffic::follow(log.clone(), config.traffic));
    }

    // Tell the person at the terminal where to point their client once
    // Envoy has taken the listeners.
    let served = first.translation.served.clone();
    let mut announced = false;
    // The version last pushed after an edit and when its change was seen:
    // printed once Envoy has acknowledged it for every resource type.
    let mut awaiting_ack: Option<(u64, std::time::Instant)> = None;
    let mut last_files = fingerprint(&config.files);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            status = envoy.wait() => {
                bail!("Envoy exited: {}", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("aigw: stopping");
                stop(&mut envoy).await;
                return Ok(());
            }
            _ = terminate() => {
                stop(&mut envoy).await;
                return Ok(());
            }
            changed = replies.changed() => {
                if changed.is_err() { continue; }
                let acked = replies.borrow_and_update().clone();
                let accepted = matches!(acked.get(proto::LISTENER), Some(Reply::Acked(v)) if *v >= 1);
                if let Some((pushed, seen)) = awaiting_ack {
                    if [proto::CLUSTER, proto::LISTENER, proto::ROUTE].iter().all(|t| matches!(acked.get(*t), Some(Reply::Acked(v)) if *v >= pushed)) {
                        awaiting_ack = None;
                        eprintln!("aigw: configuration version {pushed} acknowledged by Envoy {} ms after the change was seen", seen.elapsed().as_millis());
                    }
                }
                if accepted && !announced {
                    announced = true;
                    for (address, port, _) in &served {
                        wait_for_listener(address, *port).await;
                    }
                    for (address, port, models) in &served {
                        println!("aigw: listening on http://{address}:{port} (admin http://127.0.0.1:{})", config.admin_port);
                        println!("aigw: models: {}", models.join(", "));
                    }
                }
            }
            _ = tick.tick() => {
                let now = fingerprint(&config.files);
                if now == last_files { continue; }
                last_files = now;
                let seen = std::time::Instant::now();
                let next = load(&config, extra.as_deref(), credential_port, version + 1);
                print_diagnostics(&next.translation.diagnostics);
                if next.translation.listeners.is_empty() || has_errors(&next.translation.diagnostics) && next.translation.clusters.is_empty() {
                    eprintln!("aigw: the edited configuration serves nothing; keeping the previous one");
                    continue;
                }
                version += 1;
                credentials.update(next.translation.credentials.clone());
                refresher.sync(&next.translation.minted);
                rate_limiter.update(next.translation.rate_limits.clone());
                let _ = snapshot_tx.send(Arc::new(next.snapshot));
                eprintln!("aigw: configuration version {version} pushed to Envoy");
                awaiting_ack = Some((version, seen));
            }
        }
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn stop(envoy: &mut tokio::process::Child) {
    if let Some(pid) = envoy.id() {
        // SIGTERM lets Envoy close its listeners; kill if it lingers.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(5), envoy.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = envoy.kill().await;
}

/// Envoy ACKs a listener before it has warmed and its workers bind the
/// port: "listening on" is printed once a connection is taken (or after
/// 10 s, when the port may be unreachable from here).
async fn wait_for_listener(address: &str, port: u16) {
    let host = match address {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
