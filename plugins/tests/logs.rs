//! Hook log lines, in a test binary of their own.
//!
//! Whether a log site is wanted is cached process-wide, and a site hit for the first time
//! on another thread while a test installs its subscriber can stay cached as unwanted
//! (tracing's registration race). Among the other hook tests this one lost a line about
//! once in a few dozen full runs; alone in its process nothing else hits the sites.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use support::*;

#[test]
fn logs_carry_script_route_and_request_id() {
    let (engine, _) = engine_with(HookConfig::default());
    let talk = one(
        &engine,
        "talk.lua",
        // A line break in what a hook logs (a client's header, say) forges no line.
        "function on_request(req)\n  log.warn('hello', 42, nil, 'x\\nforged')\nend\n",
    );
    let fail = hooks(
        &engine,
        vec![(
            script(
                "oops.lua",
                "function on_request(req)\n\n  error('oops')\nend\n",
            ),
            OnError::Continue,
        )],
        Arc::new(NoCallouts),
    );
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut req = request();
        talk.on_request(&mut req).unwrap();
        fail.on_request(&mut req).unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for want in [
        "WARN",
        "hello 42 nil x\\nforged",
        "script=talk.lua",
        "route=\"orders\"",
        "request_id=\"req-42\"",
    ] {
        assert!(lines[0].contains(want), "{want} in {}", lines[0]);
    }
    for want in [
        "WARN",
        "oops",
        "script=oops.lua",
        "phase=on_request",
        "line=3",
        "request_id=req-42",
        "result=error",
    ] {
        assert!(lines[1].contains(want), "{want} in {}", lines[1]);
    }
}

/// A tracing writer that keeps what is written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
