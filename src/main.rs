use std::io::Write;

use clap::Parser;

use s3mount::cli::{Cli, MountConfig};
use s3mount::credentials::ProcessEnv;

fn main() {
    let (args, helper) = match s3mount::cli::helper_args(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3mount: {e}");
            std::process::exit(1);
        }
    };
    let cli = Cli::parse_from(args);
    if helper.fake {
        // mount -f: check everything, mount nothing.
        let code = match MountConfig::from_cli(cli, &ProcessEnv) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("s3mount: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let debug = cli.debug
        || cli
            .options
            .iter()
            .any(|o| o.split(',').any(|x| x == "debug"));
    if !cli.foreground && !cli.daemon_child {
        // Validate here too, so a bad flag fails before anything is started. No logging yet:
        // the mount process reports its own warnings, and they are relayed from there.
        if let Err(e) = MountConfig::from_cli(cli.clone(), &ProcessEnv) {
            eprintln!("s3mount: {e}");
            std::process::exit(1);
        }
        std::process::exit(s3mount::daemon::spawn_and_wait());
    }
    s3mount::logging::init(debug, cli.daemon_child);
    let code = match MountConfig::from_cli(cli, &ProcessEnv).and_then(s3mount::run::run) {
        Ok(()) => 0,
        Err(e) => {
            if s3mount::logging::is_detached() {
                // stderr is /dev/null now: the log (syslog/journald) is where this is seen.
                tracing::error!("{e}");
            } else {
                let _ = writeln!(std::io::stderr(), "s3mount: {e}");
            }
            1
        }
    };
    std::process::exit(code);
}
