//! The `keyturn` binary: parse the command line and run. See `cli`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyturn::cli::main()
}
