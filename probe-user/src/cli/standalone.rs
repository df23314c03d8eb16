//! What `run` and `watch` share when they load probectl's own programs (no daemon):
//! opening the engine and the output, printing what the engine returns, SIGHUP.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use probe_user::engine::losses::Losses;
use probe_user::engine::{self, Engine};
use probe_user::output::{Format, Printer};
use probe_user::policy;

/// How often the liveness of remaining descendants is re-checked against /proc while
/// waiting for them, in case an exit event was lost (losses are counted and reported).
pub(super) const LIVENESS_CHECK: Duration = Duration::from_millis(250);

/// Loads the policy (the file, or the built-in one) and opens the engine, warning
/// about any sensor that did not attach.
pub(super) fn open_engine(
    policy_path: Option<&Path>,
    max_probes: usize,
    enforce: bool,
    trusted_resolvers: &[probe_user::policy::dns_trust::Resolver],
) -> anyhow::Result<Engine> {
    let source = match policy_path {
        Some(path) => policy::PolicySource::File(path.to_owned()),
        None => policy::PolicySource::BuiltIn,
    };
    let engine = Engine::open(
        policy::prepare(&source)?,
        &engine::Options {
            max_probes,
            enforce,
            // None given: /etc/resolv.conf's.
            trusted_resolvers: (!trusted_resolvers.is_empty()).then(|| trusted_resolvers.to_vec()),
            ..engine::Options::default()
        },
    )?;
    if enforce && engine.correlator.enforcement(true).is_none() {
        eprintln!(
            "probectl: note: --enforce: the policy has no `action: block` rule, so nothing is refused"
        );
    }
    for s in engine.unattached() {
        eprintln!(
            "probectl: warning: sensor {} did not attach ({}): {}; the report will be marked partial",
            s.program,
            s.attach_point,
            s.error.as_deref().unwrap_or("?")
        );
    }
    Ok(engine)
}

/// Where records go: `--output FILE`, else JSON on stdout or readable lines on
/// stderr; colours only for readable lines on a terminal.
pub(super) fn output_for(
    json: bool,
    output: Option<&Path>,
    no_color: bool,
) -> anyhow::Result<(Format, Box<dyn std::io::Write + Send>, bool)> {
    let format = if json { Format::Json } else { Format::Human };
    let out: Box<dyn std::io::Write + Send> = match (output, format) {
        // Root writes it: never through another user's link, 0600, whole records
        // only (see `private_file`).
        (Some(path), _) => Box::new(
            probe_user::private_file::RecordFile::open(
                path,
                probe_user::private_file::Access::Replace,
            )
            .with_context(|| format!("cannot create the output file {}", path.display()))?,
        ),
        (None, Format::Human) => Box::new(std::io::stderr()),
        (None, _) => Box::new(std::io::stdout()),
    };
    let color =
        format == Format::Human && probe_user::output::use_color(no_color, output.is_some());
    Ok((format, out, color))
}

/// Prints every record the engine has made since the last call.
pub(super) fn print(engine: &mut Engine, printer: &mut Printer) {
    for record in engine.take_records() {
        printer.emit(&record);
    }
}

/// SIGHUP: the `--policy` file again. A policy that fails validation (or the kernel
/// update) is refused and the one in force stays; either way a `policy_reload` record
/// says what happened.
pub(super) fn reload(engine: &mut Engine, path: Option<&Path>, printer: &mut Printer) {
    let source = path.map_or_else(
        || policy::DEFAULT_POLICY_SOURCE.to_owned(),
        |p| p.display().to_string(),
    );
    let loaded = match path {
        None => Err("no --policy file: the built-in policy cannot change".to_owned()),
        // Prepared on the loop: bounded (docs/policy.md, "Limits"), and a standalone
        // run has nothing else to answer meanwhile.
        Some(path) => {
            policy::prepare(&policy::PolicySource::File(path.to_owned())).map_err(|e| e.to_string())
        }
    };
    let _ = engine.apply_policy(source, loaded);
    print(engine, printer);
}

/// The engine's loss counters and the printer's.
pub(super) fn losses(engine: &Engine, printer: &Printer) -> Losses {
    let mut losses = engine.losses();
    use probe_user::engine::listener::Listener as _;
    printer.add_losses(&mut losses);
    losses
}

/// After the report: the attachments' last references go to a short-lived child
/// (`sensors::teardown`), so probectl exits without waiting for the kernel's
/// detaches. If it cannot fork, the engine's drop detaches here, only slower.
pub(super) fn detach_off_the_exit_path() {
    use std::io::Write as _;
    // The child must not hold (or write) half-flushed output.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if let Err(err) = probe_user::sensors::teardown::close_in_background() {
        tracing::debug!("detaching in the foreground: cannot fork: {err}");
    }
}
