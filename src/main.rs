//! The `recept` command: parse the command line and dispatch.

use std::process::ExitCode;

fn main() -> ExitCode {
    recept::cli::main()
}
