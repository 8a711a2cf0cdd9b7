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
            let runtime = tokio::runtime::Runtime::new()?;
            if let Err(err) = runtime.block_on(strangler::app::run(run.args, run.tls)) {
                tracing::error!("{err}");
                eprintln!("strangler: {err}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            strangler::logging::init(LogFormat::Text);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(strangler::demo::run(args))?;
            Ok(())
        }
    }
}
