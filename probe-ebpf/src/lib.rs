#![no_std]
// This file exists so that probe-user can name probe-ebpf as a build-dependency (cargo
// then rebuilds the object when the kernel sources change); the programs are in main.rs.
