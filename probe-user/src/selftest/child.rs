//! The watched side of the self-test: probectl re-executed in a hidden mode
//! (`probectl __selftest-child ...`) performs each sensor's real operations, in
//! this order, once the runner has put it in the watched set:
//!
//! 1. waits for one byte on stdin (the runner's gate: nothing before it is watched);
//! 2. opens the policy path, then reads the link (readlink);
//! 3. calls libc's `getenv` for the policy's env name;
//! 4. connects over TCP to the runner's loopback listener;
//! 5. sends one UDP datagram to the runner's loopback socket;
//! 6. execs itself again (`--after-exec`), with the policy's env name in its
//!    environment, which exits 0 at once.
//!
//! Every step that fails is printed to stderr; the runner judges by what the sensors
//! saw, not by what the child says.

use std::ffi::{CString, OsString};
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__selftest-child";
/// The argument of the exec'd image, which only exits.
pub const AFTER_EXEC: &str = "--after-exec";

/// What the child is told to do (its command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPlan {
    pub path: PathBuf,
    pub env_name: String,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

impl ChildPlan {
    /// The arguments after the subcommand's name.
    pub fn to_args(&self) -> Vec<OsString> {
        vec![
            self.path.clone().into_os_string(),
            self.env_name.clone().into(),
            self.tcp.to_string().into(),
            self.udp.to_string().into(),
        ]
    }

    pub fn from_args(args: &[OsString]) -> Option<Self> {
        let [path, env_name, tcp, udp] = args else {
            return None;
        };
        Some(Self {
            path: PathBuf::from(path),
            env_name: env_name.to_str()?.to_owned(),
            tcp: tcp.to_str()?.parse().ok()?,
            udp: udp.to_str()?.parse().ok()?,
        })
    }
}

/// The hidden mode's entry point; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    if args.first().is_some_and(|a| a == AFTER_EXEC) {
        return 0;
    }
    let Some(plan) = ChildPlan::from_args(args) else {
        eprintln!(
            "probectl {SUBCOMMAND}: internal mode of `probectl selftest`, not for direct use"
        );
        return 2;
    };
    // The gate: the runner writes one byte once this pid is watched. End of file
    // means the runner gave up: do nothing.
    let mut byte = [0u8; 1];
    if !matches!(std::io::stdin().read(&mut byte), Ok(1)) {
        return 1;
    }
    let mut failed = false;
    let mut step = |name: &str, result: std::io::Result<()>| {
        if let Err(err) = result {
            eprintln!("probectl selftest: child: {name}: {err}");
            failed = true;
        }
    };
    step("open", std::fs::File::open(&plan.path).map(drop));
    step("readlink", std::fs::read_link(&plan.path).map(drop));
    step("getenv", getenv(&plan.env_name));
    step("connect", TcpStream::connect(plan.tcp).map(drop));
    step("udp send", udp_send(plan.udp));
    // Only returns on failure.
    let err = match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(AFTER_EXEC)
            .env(&plan.env_name, "1")
            .exec(),
        Err(err) => err,
    };
    step("exec", Err(err));
    if failed { 1 } else { 0 }
}

/// libc's getenv itself (the uprobe's target), not a Rust copy of the environment.
fn getenv(name: &str) -> std::io::Result<()> {
    let name = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name; the result is only compared with null, and no
    // other thread of this process changes the environment.
    let _ = unsafe { libc::getenv(name.as_ptr()) };
    Ok(())
}

fn udp_send(to: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(to.ip(), 0))?;
    socket.send_to(b"probectl selftest", to).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_round_trips_through_arguments() {
        let plan = ChildPlan {
            path: PathBuf::from("/tmp/probectl-selftest-x/probe link"),
            env_name: "PROBECTL_SELFTEST".to_owned(),
            tcp: "127.0.0.1:4000".parse().unwrap(),
            udp: "127.0.0.1:4001".parse().unwrap(),
        };
        assert_eq!(ChildPlan::from_args(&plan.to_args()), Some(plan));
        assert_eq!(ChildPlan::from_args(&[]), None);
    }
}
