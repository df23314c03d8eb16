//! A realistic unwatched workload for `cargo xtask bench`: a small C project (40
//! generated source files and a Makefile) built from scratch with `make -j2`. A
//! compiler opens, stats and execs a great deal, all of it outside probectl's watched
//! set, so this is what a developer pays for the daemon running while they work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Result, bail};

pub const FILES: usize = 40;

/// Writes the project under `dir` (again each time: the sources are deterministic).
pub fn generate(dir: &Path) -> Result<PathBuf> {
    let project = dir.join("cproject");
    std::fs::create_dir_all(&project)?;
    let mut objects = Vec::new();
    let mut main = String::from("#include <stdio.h>\n");
    for i in 0..FILES {
        main.push_str(&format!("long unit{i}(long);\n"));
        let mut src =
            String::from("#include <string.h>\n#include <stdlib.h>\n#include <stdio.h>\n\n");
        for f in 0..12 {
            src.push_str(&format!(
                "static long f{f}(long x) {{\n    char buf[64];\n    long acc = x;\n    for (int i = 0; i < 100; i++) {{\n        snprintf(buf, sizeof buf, \"%ld-{i}-{f}\", acc + i);\n        acc += (long)strlen(buf) * (i % 7 + {f});\n        if (acc % 13 == 0) acc ^= strtol(buf, NULL, 10);\n    }}\n    return acc;\n}}\n\n"
            ));
        }
        src.push_str(&format!("long unit{i}(long x) {{\n    long acc = x;\n"));
        for f in 0..12 {
            src.push_str(&format!("    acc += f{f}(acc);\n"));
        }
        src.push_str("    return acc;\n}\n");
        std::fs::write(project.join(format!("unit{i}.c")), src)?;
        objects.push(format!("unit{i}.o"));
    }
    main.push_str("int main(void) {\n    long acc = 1;\n");
    for i in 0..FILES {
        main.push_str(&format!("    acc = unit{i}(acc);\n"));
    }
    main.push_str("    printf(\"%ld\\n\", acc);\n    return 0;\n}\n");
    std::fs::write(project.join("main.c"), main)?;
    objects.push("main.o".to_owned());
    std::fs::write(
        project.join("Makefile"),
        format!(
            "CFLAGS = -O2 -Wall\nOBJS = {}\n\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f prog $(OBJS)\n",
            objects.join(" ")
        ),
    )?;
    Ok(project)
}

/// One build's cost: wall time, and the CPU time of make and everything it ran.
pub struct BuildCost {
    pub wall_ns: f64,
    /// User plus system CPU of the build's whole process tree (make reaps its
    /// children, so its rusage from wait4 includes theirs), in ns. A monitor's
    /// kernel programs run in the build's syscalls and are charged here as system
    /// time, while the wall time also carries whatever else the machine runs: this is
    /// the steadier figure on a shared machine.
    pub cpu_ns: f64,
}

/// One clean build with `make -j2`.
pub fn build(project: &Path) -> Result<BuildCost> {
    let quiet = |c: &mut Command| -> Result<bool> {
        Ok(c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success())
    };
    quiet(Command::new("make").arg("-C").arg(project).arg("clean"))?;
    crate::bench_settle::settle();
    let started = Instant::now();
    let child = Command::new("make")
        .arg("-s")
        .arg("-j2")
        .arg("-C")
        .arg(project)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 failed for make in {}", project.display());
    }
    let wall_ns = started.elapsed().as_nanos() as f64;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("make -j2 failed in {}", project.display());
    }
    let ns = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    Ok(BuildCost {
        wall_ns,
        cpu_ns: ns(usage.ru_utime) + ns(usage.ru_stime),
    })
}
