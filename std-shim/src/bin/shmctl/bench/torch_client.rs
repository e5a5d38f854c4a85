//! `shmctl bench --torch-client`: PyTorch's own client (THManagedMapAllocator,
//! which waits for `OK` on every registration) creating and dropping shared
//! 4 KiB storages, through PyTorch's manager and through ours, in
//! interleaved rounds. Torch is never modified: each manager runs from a
//! symlink overlay of the torch package on `PYTHONPATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use libshm::Config;

use crate::Outcome;
use crate::torch::site;

/// The Python side: prints the median microseconds per allocation.
const SCRIPT: &str = include_str!("torch_alloc.py");

/// A temporary directory with one overlay of the torch package per manager.
struct Overlays {
    root: PathBuf,
}

impl Overlays {
    fn new(torch: &Path, managers: &[(&str, &Path)]) -> std::io::Result<Self> {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("shmctl-bench-torch-{}", std::process::id()));
        for (who, manager) in managers {
            let package = root.join(who).join("torch");
            std::fs::create_dir_all(package.join("bin"))?;
            for entry in std::fs::read_dir(torch)? {
                let entry = entry?;
                if entry.file_name() != "bin" {
                    symlink(entry.path(), package.join(entry.file_name()))?;
                }
            }
            for entry in std::fs::read_dir(torch.join("bin"))? {
                let entry = entry?;
                if entry.file_name() != "torch_shm_manager" {
                    symlink(entry.path(), package.join("bin").join(entry.file_name()))?;
                }
            }
            std::fs::copy(manager, package.join("bin/torch_shm_manager"))?;
        }
        std::fs::write(root.join("alloc.py"), SCRIPT)?;
        Ok(Self { root })
    }
}

impl Drop for Overlays {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub(crate) fn run(python: Option<&Path>, rounds: usize, busy: bool) -> Outcome {
    let python = site::find_python(python)?;
    let torch = site::locate(&python)?;
    let ours = Config::from_env()?.launcher()?.executable().to_path_buf();
    let theirs = torch.manager();
    let overlays = Overlays::new(&torch.package, &[("ours", &ours), ("theirs", &theirs)])?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "shmctl bench --torch-client: torch {} creating and dropping shared 4 KiB storages ({}; {rounds} interleaved rounds)",
        torch.version,
        if busy { "one core kept busy" } else { "idle" }
    )?;
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for k in 0..2 {
            let who = (round + k) % 2;
            let dir = overlays.root.join(["ours", "theirs"][who]);
            let output = Command::new(&python)
                .arg(overlays.root.join("alloc.py"))
                .args(["4096", "1000", "3"])
                .env("PYTHONPATH", &dir)
                .output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            let micros: f64 = text.trim().parse().map_err(|_| {
                format!(
                    "the torch client printed {text:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
            samples[who].push(micros);
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (ours_us, theirs_us) = (median(&mut samples[0]), median(&mut samples[1]));
    writeln!(
        out,
        "  PyTorch's manager: {theirs_us:>8.1} us per allocation"
    )?;
    writeln!(out, "  ours:              {ours_us:>8.1} us per allocation")?;
    writeln!(out, "  ours is {:.2}x as fast", theirs_us / ours_us)?;
    Ok(ExitCode::SUCCESS)
}
