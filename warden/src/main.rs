//! The `warden` command: one binary for every role.
#![forbid(unsafe_code)]

mod args;
mod certs;
mod check;
mod health;
mod models;
mod ovms;
mod sandbox_report;
mod serve;
mod token;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warden_shared::config::LogFormat;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    propagate_version = true,
    about = "A security-first model server for OpenVINO models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and a supervised, sandboxed backend.
    Serve(args::RunArgs),
    /// Run only the network-facing gateway (two-container deployments).
    Gateway(args::RunArgs),
    /// Run only the sandboxed inference backend (two-container deployments).
    Backend(args::RunArgs),
    /// Run only the object-storage fetcher: sync s3://, gs:// and az:// repositories
    /// into the local model cache (started by `serve`; its own container otherwise).
    Fetcher(args::RunArgs),
    /// Make DEVELOPMENT-ONLY certificates and a token signing key.
    CertsDev {
        /// Folder to write ca.pem, server.pem, server.key, client.pem, client.key, jwt.key, jwt.pub.pem.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Mint a JWT for trying a server out.
    Token(token::TokenArgs),
    /// Validate a configuration and print what it would serve.
    Check(args::RunArgs),
    /// Exit 0 if the server answers 200 on /v2/health/ready over TLS, else 1.
    Health(health::HealthArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Operate on model folders (signature verification).
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of audit files, oldest first; names the first broken file
    /// and record. A live log's path stands for it and all its rotated files.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Longest operational log line, in bytes; longer events are cut (and say so).
const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// Stderr, one event per line whatever a logged value contains: every line break but
/// the last and every control character is escaped, and the line is bounded (see
/// `warden_gateway::logsafe::one_line`). Under the per-value `log_safe` at the call
/// sites, so that a value logged without it still cannot forge a line or steer a
/// terminal.
struct OneLineStderr;

impl std::io::Write for OneLineStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = warden_gateway::logsafe::one_line(buf, MAX_LOG_LINE_BYTES);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `--log_level` (OVMS) wins over `WARDEN_LOG`, which wins over `info`.
fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| OneLineStderr)
        // Colour codes would be escaped by the writer: never emitted.
        .with_ansi(false)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() {
    // OVMS flags Warden refuses are named with the reason, before clap would only say
    // "unexpected argument".
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if matches!(
        args.get(1).and_then(|a| a.to_str()),
        Some("serve" | "gateway" | "backend" | "fetcher" | "check")
    ) && let Err(e) = ovms::refuse_unsupported(&args[2..])
    {
        eprintln!("warden: error: {e:#}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    let code = match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Serve(a) => {
            let config = a.load()?;
            init_logging(config.log.format, a.log_filter()?);
            // The children parse the same flags: everything after `serve`.
            let child_args = std::env::args_os().skip(2).collect();
            serve::run(&config, child_args)
        }
        Command::Gateway(a) => {
            let config = a.load()?;
            init_logging(config.log.format, a.log_filter()?);
            warden_gateway::run(config)?;
            Ok(0)
        }
        Command::Backend(a) => {
            let config = a.load()?;
            init_logging(config.log.format, a.log_filter()?);
            let options = warden_backend::BackendOptions {
                insecure_allow_unenforced_sandbox: a.insecure_allow_unenforced_sandbox,
                gateway_uid: None,
                probe: a.probe,
            };
            warden_backend::run(&config, &options)?;
            Ok(0)
        }
        Command::Fetcher(a) => {
            let config = a.load()?;
            init_logging(config.log.format, a.log_filter()?);
            warden_fetcher::run(&config)?;
            Ok(0)
        }
        Command::CertsDev { out } => certs::run(&out).map(|()| 0),
        Command::Token(t) => token::run(&t).map(|()| 0),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let files = warden_gateway::audit::expand(&files)?;
            match warden_gateway::audit::verify(&files)? {
                Ok(intact) => {
                    println!(
                        "audit chain intact: {} records in {} file(s), from seq {}",
                        intact.records,
                        files.len(),
                        intact.first_seq
                    );
                    if intact.first_seq > 0 {
                        if intact.starts_at_file_start {
                            println!(
                                "records before seq {} are not in the set: older files were pruned by retention (expected)",
                                intact.first_seq
                            );
                        } else {
                            println!(
                                "WARNING: the set starts at seq {} in the middle of a file: records before it were cut out",
                                intact.first_seq
                            );
                            return Ok(1);
                        }
                    }
                    Ok(0)
                }
                Err(b) => {
                    println!(
                        "audit chain BROKEN at {} line {} (seq {}): {}",
                        b.file,
                        b.line,
                        b.seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                        b.why
                    );
                    Ok(1)
                }
            }
        }
        Command::Models { command } => models::run(&command),
        Command::Check(a) => {
            let (config, mapping) = a.load_with_mapping()?;
            let report = check::run(&config, &mapping)?;
            print!("{report}");
            print!("{}", sandbox_report::describe(&config)?);
            println!("configuration OK");
            if !a.probe {
                return Ok(0);
            }
            // The probe runs in a backend process of its own, in the real sandbox: the
            // same flags, `backend` instead of `check`.
            println!("probe (each model loaded and run once in the sandbox):");
            let exe = std::env::current_exe()?;
            // Piped: the sandboxed child may not write to a regular file (RLIMIT_FSIZE 0).
            let mut probe = std::process::Command::new(exe);
            probe
                .arg("backend")
                .args(std::env::args_os().skip(2))
                .env("WARDEN_LOG", "warn");
            serve::scrub_cloud_env(&mut probe);
            let out = probe.output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            Ok(if out.status.success() { 0 } else { 1 })
        }
        Command::Health(h) => health::run(&h),
    }
}
