//! The `warden` command: one binary for every role.
#![forbid(unsafe_code)]

mod args;
mod certs;
mod check;
mod health;
mod models;
mod ovms;
mod serve;
mod token;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Verify the hash chain of audit files, oldest first; names the first broken record.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--log_level` (OVMS) wins over `WARDEN_LOG`, which wins over `info`.
fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() {
    // OVMS flags Warden refuses are named with the reason, before clap would only say
    // "unexpected argument".
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if matches!(
        args.get(1).and_then(|a| a.to_str()),
        Some("serve" | "gateway" | "backend" | "check")
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
            init_logging(a.log_filter()?);
            let config = a.load()?;
            // The children parse the same flags: everything after `serve`.
            let child_args = std::env::args_os().skip(2).collect();
            serve::run(&config, child_args)
        }
        Command::Gateway(a) => {
            init_logging(a.log_filter()?);
            warden_gateway::run(a.load()?)?;
            Ok(0)
        }
        Command::Backend(a) => {
            init_logging(a.log_filter()?);
            let options = warden_backend::BackendOptions {
                insecure_allow_unenforced_sandbox: a.insecure_allow_unenforced_sandbox,
                gateway_uid: None,
                probe: a.probe,
            };
            warden_backend::run(&a.load()?, &options)?;
            Ok(0)
        }
        Command::CertsDev { out } => certs::run(&out).map(|()| 0),
        Command::Token(t) => token::run(&t).map(|()| 0),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => match warden_gateway::audit::verify(&files)? {
            Ok(n) => {
                println!("audit chain intact: {n} records in {} file(s)", files.len());
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
        },
        Command::Models { command } => models::run(&command),
        Command::Check(a) => {
            let (config, mapping) = a.load_with_mapping()?;
            let report = check::run(&config, &mapping)?;
            print!("{report}");
            println!("configuration OK");
            if !a.probe {
                return Ok(0);
            }
            // The probe runs in a backend process of its own, in the real sandbox: the
            // same flags, `backend` instead of `check`.
            println!("probe (each model loaded and run once in the sandbox):");
            let exe = std::env::current_exe()?;
            // Piped: the sandboxed child may not write to a regular file (RLIMIT_FSIZE 0).
            let out = std::process::Command::new(exe)
                .arg("backend")
                .args(std::env::args_os().skip(2))
                .env("WARDEN_LOG", "warn")
                .output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            Ok(if out.status.success() { 0 } else { 1 })
        }
        Command::Health(h) => health::run(&h),
    }
}
