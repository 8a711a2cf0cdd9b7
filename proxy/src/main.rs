//! The `strangler` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use strangler::config::{Cli, Command, LogFormat};

// A proxy allocates and frees many small buffers per request (headers, URIs, boxed bodies);
// mimalloc's thread-local free lists halve what glibc's malloc costs on that pattern
// (measured with callgrind on the pass-through path; see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // The only rustls provider compiled in; installed before anything can ask for the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => {
            let code = strangler::check::check(&args.file, args.explain.as_deref(), &args.headers);
            std::process::exit(code);
        }
        Command::Run(run) => {
            strangler::logging::init(run.args.log_format);
            let runtime = runtime(run.args.workers)?;
            if let Err(err) = runtime.block_on(strangler::app::run(run.args, run.tls)) {
                tracing::error!("{err}");
                eprintln!("strangler: {err}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            strangler::logging::init(LogFormat::Text);
            let runtime = runtime(None)?;
            runtime.block_on(strangler::demo::run(args))?;
            Ok(())
        }
    }
}

/// The tokio runtime: `workers` threads (default: the CPUs available to this process).
///
/// One worker gets the single-threaded scheduler: on one CPU the multi-threaded one only
/// adds cross-thread bookkeeping to every wake-up (measured with callgrind on the
/// pass-through path; see benches/README.md).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
