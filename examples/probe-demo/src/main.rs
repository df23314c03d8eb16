//! The bundled example that `cargo xtask demo` runs under `probectl run`.
//!
//! It does, on purpose, what a fingerprinting CLI does before it phones home: looks up
//! the time zone and proxy/relay settings (libc getenv, as Node's `process.env` does),
//! opens and readlinks /etc/localtime (as glibc and ICU do), then connects to the
//! address given as its only argument (the demo starts a local listener there).

use std::io::Read as _;
use std::net::TcpStream;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: probe-demo HOST:PORT");
        std::process::exit(2);
    };
    // Each of these is one libc getenv(3) call.
    for name in [
        "TZ",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "ANTHROPIC_BASE_URL",
    ] {
        let value = std::env::var_os(name);
        println!(
            "probe-demo: {name} is {}",
            if value.is_some() { "set" } else { "unset" }
        );
    }
    // openat(AT_FDCWD, "/etc/localtime") and readlink("/etc/localtime").
    let mut zone = Vec::new();
    let opened = std::fs::File::open("/etc/localtime").and_then(|mut f| f.read_to_end(&mut zone));
    println!(
        "probe-demo: read /etc/localtime: {}",
        opened
            .map(|n| format!("{n} bytes"))
            .unwrap_or_else(|e| e.to_string())
    );
    match std::fs::read_link("/etc/localtime") {
        Ok(target) => println!("probe-demo: /etc/localtime -> {}", target.display()),
        Err(err) => println!("probe-demo: readlink /etc/localtime: {err}"),
    }
    match TcpStream::connect(&addr) {
        Ok(_) => println!("probe-demo: connected to {addr}"),
        Err(err) => {
            eprintln!("probe-demo: connect to {addr} failed: {err}");
            std::process::exit(1);
        }
    }
}
