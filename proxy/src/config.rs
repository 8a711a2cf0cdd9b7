//! Command-line flags: static settings that need a restart (everything else is in the route file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use strangler_plugins::HookConfig;

use crate::tls::{CertPair, TlsError};

/// `strangler`: a reverse proxy for migrating a monolith one route at a time.
#[derive(Debug, Parser)]
#[command(name = "strangler", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of the binary.
// Parsed once at start-up and moved out at once: boxing `Run` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic according to a route file.
    Run(RunCommand),
    /// Validate a route file (like `nginx -t`): exit 0 when valid, 1 when not.
    Check(CheckArgs),
    /// Start an embedded monolith, a new service and the proxy in front of them.
    Demo(DemoArgs),
}

/// All flags of `strangler run`.
#[derive(Debug, Args, Clone)]
pub struct RunCommand {
    /// Everything but TLS.
    #[command(flatten)]
    pub args: RunArgs,
    /// The HTTPS listeners and their certificates.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Flags of `strangler run` (see [`TlsArgs`] for the HTTPS listeners).
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The route file; watched and reloaded on change.
    #[arg(long, env = "STRANGLER_ROUTES")]
    pub routes: PathBuf,
    /// Plain HTTP listener (HTTP/1.1 and h2c); repeatable.
    #[arg(
        long,
        env = "STRANGLER_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:8080"
    )]
    pub listen: Vec<SocketAddr>,
    /// Admin listener (health, readiness).
    #[arg(long, env = "STRANGLER_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// File holding the bearer token the admin endpoint requires (all but probes and metrics).
    #[arg(long, env = "STRANGLER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Allow a non-loopback admin address without a token (trusted networks only).
    /// (The variable takes what environments use for yes and no: true/false, 1/0, yes/no,
    /// on/off.)
    #[arg(long, env = "STRANGLER_ADMIN_INSECURE", value_parser = BoolishValueParser::new())]
    pub admin_insecure: bool,
    /// Skip shadow copies while the CPUs this process may run on were idle less than this
    /// share of the last 100 ms, or its cgroup's CPU quota had less than this share left
    /// (a copy would take CPU from the client traffic); counted as dropped with reason
    /// `no_spare_cpu`. `0%` makes every copy the bounds allow.
    #[arg(long, env = "STRANGLER_SHADOW_SPARE_CPU", value_parser = parse_percent, default_value = "5%")]
    pub shadow_spare_cpu: f64,
    /// Append every shadow mismatch record to this file as one JSON line.
    #[arg(long, env = "STRANGLER_DIFF_LOG")]
    pub diff_log: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "STRANGLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// One log line per request (`off` for benchmarks and very busy edges).
    #[arg(long, env = "STRANGLER_ACCESS_LOG", value_enum, default_value_t = Switch::On)]
    pub access_log: Switch,
    /// Largest request body accepted, e.g. `10MiB` (413 above it); unlimited when absent.
    #[arg(long, env = "STRANGLER_MAX_BODY", value_parser = parse_size)]
    pub max_body: Option<u64>,
    /// Largest total size of request headers (431 above it).
    #[arg(long, env = "STRANGLER_MAX_HEADER_BYTES", value_parser = parse_size, default_value = "32KiB")]
    pub max_header_bytes: u64,
    /// After SIGTERM/SIGINT, how long to keep accepting with readiness already false, so
    /// that load balancers (Kubernetes endpoints) stop sending before the listeners close.
    #[arg(long, env = "STRANGLER_SHUTDOWN_DELAY", value_parser = parse_duration, default_value = "0s")]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT (counted once
    /// the listeners have stopped accepting, after --shutdown-delay).
    #[arg(long, env = "STRANGLER_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// How long a client may take to send request headers.
    #[arg(long, env = "STRANGLER_HEADER_TIMEOUT", value_parser = parse_positive_duration, default_value = "30s")]
    pub header_timeout: Duration,
    /// Safety-net poll of the route file, in case a file event was missed.
    #[arg(long, env = "STRANGLER_POLL", value_parser = parse_positive_duration, default_value = "2s")]
    pub poll: Duration,
    /// Worker threads serving connections; default: the CPUs this process may run on.
    /// With one, the proxy runs on a single-threaded runtime (no cross-thread scheduling).
    #[arg(long, env = "STRANGLER_WORKERS", value_parser = parse_positive_count)]
    pub workers: Option<usize>,
    /// The budgets of the Lua hooks.
    #[command(flatten)]
    pub hooks: HookArgs,
}

/// Budgets of the Lua hooks, the same for every route: static for the life of the process,
/// unlike the hook scripts, which reload with the route file.
#[derive(Debug, Args, Clone)]
pub struct HookArgs {
    /// Time one `on_request` or `on_response` hook call may run (and one stretch of an
    /// `after_response` hook between callouts) before it is cut off; the hook then fails as
    /// its `on_error` says, counted with result `timeout`.
    #[arg(long, env = "STRANGLER_HOOK_BUDGET", value_parser = parse_positive_duration, default_value = "50ms")]
    pub hook_budget: Duration,
    /// Memory limit of each Lua state (one per worker thread and one for `after_response`,
    /// each shared by every script loaded into it); at least 1MiB.
    #[arg(long, env = "STRANGLER_HOOK_MEMORY", value_parser = parse_hook_memory, default_value = "64MiB")]
    pub hook_memory: u64,
    /// `after_response` jobs (one per exchange whose route has such hooks) that may be
    /// queued or running at once; above it, jobs are dropped and counted as `dropped`.
    #[arg(long, env = "STRANGLER_HOOK_MAX_PENDING", value_parser = parse_positive_count, default_value = "1024")]
    pub hook_max_pending: usize,
    /// Timeout of an `http.request` callout that sets no `timeout` of its own.
    #[arg(long, env = "STRANGLER_HOOK_CALLOUT_TIMEOUT", value_parser = parse_positive_duration, default_value = "2s")]
    pub hook_callout_timeout: Duration,
    /// Wall-clock limit of the `after_response` hooks of one exchange, callouts included.
    #[arg(long, env = "STRANGLER_HOOK_JOB_TIMEOUT", value_parser = parse_positive_duration, default_value = "10s")]
    pub hook_job_timeout: Duration,
}

impl HookArgs {
    /// The hook engine's configuration these flags make.
    pub fn config(&self) -> HookConfig {
        HookConfig {
            call_budget: self.hook_budget,
            memory_limit: usize::try_from(self.hook_memory).unwrap_or(usize::MAX),
            max_pending: self.hook_max_pending,
            callout_timeout: self.hook_callout_timeout,
            after_response_timeout: self.hook_job_timeout,
        }
    }
}

impl Default for HookArgs {
    /// The flags' defaults, which are the engine's.
    fn default() -> Self {
        let config = HookConfig::default();
        HookArgs {
            hook_budget: config.call_budget,
            hook_memory: u64::try_from(config.memory_limit).unwrap_or(u64::MAX),
            hook_max_pending: config.max_pending,
            hook_callout_timeout: config.callout_timeout,
            hook_job_timeout: config.after_response_timeout,
        }
    }
}

/// HTTPS listener flags of `strangler run`: addresses and certificate/key pairs.
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// HTTPS listener (TLS 1.2/1.3, HTTP/2 and HTTP/1.1 by ALPN); repeatable. Needs at
    /// least one --tls-cert/--tls-key pair.
    #[arg(long, env = "STRANGLER_LISTEN_TLS", value_delimiter = ',')]
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain for the HTTPS listeners, paired in order with --tls-key;
    /// repeatable (the client's SNI name picks the pair; the first is the default).
    /// Watched and reloaded on change.
    #[arg(long, env = "STRANGLER_TLS_CERT", value_delimiter = ',')]
    pub tls_cert: Vec<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of the --tls-cert at the same position.
    #[arg(long, env = "STRANGLER_TLS_KEY", value_delimiter = ',')]
    pub tls_key: Vec<PathBuf>,
}

impl TlsArgs {
    /// The certificate pairs, checked against the listeners: none without `--listen-tls`,
    /// at least one with it, as many keys as certificates.
    ///
    /// # Errors
    /// [`TlsError::Config`] saying which flag is missing.
    pub fn pairs(&self) -> Result<Vec<CertPair>, TlsError> {
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(TlsError::Config(format!(
                "got {} --tls-cert and {} --tls-key: give them in pairs",
                self.tls_cert.len(),
                self.tls_key.len()
            )));
        }
        if self.listen_tls.is_empty() && !self.tls_cert.is_empty() {
            return Err(TlsError::Config(
                "--tls-cert/--tls-key given without --listen-tls: no listener would use them"
                    .into(),
            ));
        }
        if !self.listen_tls.is_empty() && self.tls_cert.is_empty() {
            return Err(TlsError::Config(
                "--listen-tls needs a certificate: add --tls-cert FILE --tls-key FILE".into(),
            ));
        }
        Ok(self
            .tls_cert
            .iter()
            .zip(&self.tls_key)
            .map(|(cert, key)| CertPair {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect())
    }
}

/// Flags of `strangler check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The route file to validate.
    pub file: PathBuf,
    /// Explain which route takes a request, e.g. `"GET /invoices/7?x=1"`.
    #[arg(long)]
    pub explain: Option<String>,
    /// Headers of the explained request (`-H "x-beta: true"`), repeatable.
    #[arg(short = 'H', long = "header", requires = "explain")]
    pub headers: Vec<String>,
}

/// Flags of `strangler demo`.
///
/// Its variables are its own (`STRANGLER_DEMO_*`): a shell or container set up for `run`,
/// where `STRANGLER_LISTEN` is a list, must not change or break the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the proxy of the demo listens.
    #[arg(long, env = "STRANGLER_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo's admin endpoint listens.
    #[arg(long, env = "STRANGLER_DEMO_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Send the sample traffic, print what happened, and exit instead of serving on.
    #[arg(long)]
    pub once: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An on/off flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// Whether the switch is on.
    pub fn enabled(self) -> bool {
        self == Switch::On
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    strangler_routes::units::parse_percent(s).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    strangler_routes::units::parse_size(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    strangler_routes::units::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than 0s".to_string()),
        duration => Ok(duration),
    }
}

/// Smallest `--hook-memory`: a state with the sandbox's libraries takes a few hundred KiB
/// before any script runs.
const MIN_HOOK_MEMORY: u64 = 1024 * 1024;

fn parse_hook_memory(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        size if size < MIN_HOOK_MEMORY => Err(
            "must be at least 1MiB (a Lua state needs a few hundred KiB before any script runs)"
                .to_string(),
        ),
        size => Ok(size),
    }
}

fn parse_positive_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(listen: &[&str], certs: &[&str], keys: &[&str]) -> TlsArgs {
        TlsArgs {
            listen_tls: listen.iter().map(|a| a.parse().unwrap()).collect(),
            tls_cert: certs.iter().map(PathBuf::from).collect(),
            tls_key: keys.iter().map(PathBuf::from).collect(),
        }
    }

    /// `strangler run --routes r.yaml` plus `extra`, parsed (the run arguments, or the
    /// error as clap prints it).
    fn run_args(extra: &[&str]) -> Result<RunArgs, String> {
        let argv = ["strangler", "run", "--routes", "r.yaml"]
            .iter()
            .chain(extra);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Run(run) => Ok(run.args),
            _ => Err("not run".to_string()),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_the_flag() {
        for (flag, value, why) in [
            ("--workers", "0", "must be at least 1"),
            ("--poll", "0s", "must be longer than 0s"),
            ("--header-timeout", "0s", "must be longer than 0s"),
        ] {
            let err = run_args(&[flag, value]).unwrap_err();
            assert!(err.contains(flag) && err.contains(why), "{err}");
        }
        assert_eq!(run_args(&["--workers", "2"]).unwrap().workers, Some(2));
    }

    #[test]
    fn certificates_and_keys_pair_up_in_order() {
        let pairs = tls(
            &["127.0.0.1:8443"],
            &["a.crt", "b.crt"],
            &["a.key", "b.key"],
        )
        .pairs()
        .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].cert, PathBuf::from("b.crt"));
        assert_eq!(pairs[1].key, PathBuf::from("b.key"));
        assert!(tls(&[], &[], &[]).pairs().unwrap().is_empty());
    }

    #[test]
    fn incomplete_tls_flags_are_refused_with_the_missing_flag_named() {
        let cases = [
            (
                tls(&["127.0.0.1:8443"], &["a.crt"], &[]),
                "give them in pairs",
            ),
            (
                tls(&["127.0.0.1:8443"], &[], &[]),
                "add --tls-cert FILE --tls-key FILE",
            ),
            (tls(&[], &["a.crt"], &["a.key"]), "without --listen-tls"),
        ];
        for (args, expected) in cases {
            let err = args.pairs().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
