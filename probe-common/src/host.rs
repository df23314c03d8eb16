//! The host sensor's events: host identity asked of the kernel without a file
//! (uname, SIOCGIFHWADDR, RTM_GETLINK).

use crate::abi::EventHeader;

/// `HostCallEvent::call`, and the bit `1 << call` of `SETTING_HOST_CALLS`.
/// uname(2): host name, kernel release, machine.
pub const HOST_CALL_UNAME: u32 = 1;
/// ioctl(SIOCGIFHWADDR): one interface's MAC address.
pub const HOST_CALL_IFHWADDR: u32 = 2;
/// A netlink RTM_GETLINK request: every interface with its MAC address (glibc's
/// getifaddrs, Node's `os.networkInterfaces()`).
pub const HOST_CALL_GETLINK: u32 = 3;
/// The ioctl request number of SIOCGIFHWADDR.
pub const SIOCGIFHWADDR: u32 = 0x8927;
/// `nlmsghdr::nlmsg_type` of an RTM_GETLINK request.
pub const RTM_GETLINK: u16 = 18;
/// `sa_family` of a netlink address.
pub const AF_NETLINK: u16 = 16;
/// Bytes of an interface name (IFNAMSIZ).
pub const IFNAME_LEN: usize = 16;

/// A host-identity request of a watched process that reads no file: uname(2), the
/// SIOCGIFHWADDR ioctl, a netlink RTM_GETLINK dump. Emitted at the syscall's entry:
/// the request is what matters, and its result is not recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostCallEvent {
    pub header: EventHeader,
    /// `HOST_CALL_*`.
    pub call: u32,
    /// The fd the request went through (ioctl, netlink), else -1.
    pub fd: i32,
    /// RTM_GETLINK: the request's `nlmsg_flags` (`NLM_F_DUMP` = 0x300); else 0.
    pub flags: u32,
    /// Bytes of `ifname` before the NUL (SIOCGIFHWADDR), else 0.
    pub ifname_len: u32,
    /// SIOCGIFHWADDR: the interface name the program asked about, as it passed it.
    pub ifname: [u8; IFNAME_LEN],
}
const _: () = assert!(core::mem::size_of::<HostCallEvent>() == 24 + 16 + IFNAME_LEN);
