//! Builds the kernel crate (probe-ebpf) for bpfel-unknown-none with the preinstalled
//! nightly toolchain and bpf-linker, through aya-build. The object lands in OUT_DIR and
//! src/sensors/mod.rs embeds it with `include_bytes_aligned!`.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    // Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) exercise parsers only; they skip
    // the kernel object, whose build would inherit the sanitizer flags.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::env::var("OUT_DIR")?;
        std::fs::write(Path::new(&out).join("probe"), [])?;
        return Ok(());
    }
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("probe-user has no parent directory"))?
        .join("probe-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "probe-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|err| {
        anyhow::anyhow!(
            "building the eBPF object failed: {err:#}\n  hint: run `cargo xtask setup` (installs LLVM 22, rust-src for nightly and bpf-linker)"
        )
    })
}
