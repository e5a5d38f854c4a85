//! `shmctl torch install | restore | status`: making PyTorch run our manager.
//!
//! PyTorch has no setting for its manager: `import torch` passes
//! `<torch>/bin/torch_shm_manager` to its C extension and fails if the file is
//! missing. So adopting ours means putting `shm-manager` at that path, keeping
//! PyTorch's beside it (`torch_shm_manager.libshm-backup`) to restore byte for
//! byte. Every swap is atomic (see `swap`); `install` then starts the manager
//! the way PyTorch does to prove it serves. A torch upgrade puts PyTorch's
//! manager back over ours; `status` notices (a backup, but not ours live).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libshm::ENV_MANAGER;

use crate::Outcome;

mod elf;
mod error;
mod identity;
mod running;
mod sha256;
pub(crate) mod site;
mod swap;
mod trial;

pub(crate) use error::TorchError;
pub(crate) use identity::{Identity, identify};
pub(crate) use site::{Site, find_python, locate};

/// Arguments of `shmctl torch`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make torch run our manager: back up PyTorch's, swap ours in
    /// atomically, and check that it starts and serves.
    Install(ChangeArgs),
    /// Put PyTorch's manager back, byte for byte, and remove the backup.
    Restore(ChangeArgs),
    /// Say which manager torch will run. Exit status 0 if ours, 1 if not.
    Status(PythonArg),
}

#[derive(clap::Args, Debug)]
struct PythonArg {
    /// The python whose torch to use [default: the first python3 or python on PATH].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ChangeArgs {
    #[command(flatten)]
    python: PythonArg,
    /// Swap the file even while a manager started from it is running (it
    /// keeps the binary it started with), or restore over a manager that is
    /// neither ours nor PyTorch's.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: &Args) -> Outcome {
    match &args.command {
        Command::Install(args) => install(args),
        Command::Restore(args) => restore(args),
        Command::Status(args) => status(args),
    }
}

/// What is at torch's manager path, beside it, and running from it.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) site: Site,
    /// The live manager; `None` if the file is missing.
    pub(crate) live: Option<Identity>,
    /// The backup of PyTorch's manager, if there is one.
    pub(crate) backup: Option<Identity>,
    /// Managers running from the live path, and what each runs (read from
    /// `/proc/<pid>/exe`, which still shows a binary replaced since).
    pub(crate) running: Vec<(u32, Identity)>,
}

impl Report {
    /// Looks at `site` without changing anything.
    pub(crate) fn inspect(site: Site) -> Result<Self, TorchError> {
        let record = site.record.as_deref();
        let live = identify_if_present(&site.manager(), record)?;
        let backup = identify_if_present(&site.backup(), record)?;
        let running = running::processes_running(&site.manager())
            .into_iter()
            .filter_map(|pid| {
                let exe = PathBuf::from(format!("/proc/{pid}/exe"));
                Some((pid, identify(&exe, record).ok()?))
            })
            .collect();
        Ok(Self {
            site,
            live,
            backup,
            running,
        })
    }

    /// Whether torch will start our manager.
    pub(crate) fn runs_ours(&self) -> bool {
        self.live.as_ref().is_some_and(Identity::is_ours)
    }

    /// A backup exists but the live manager is not ours: a torch upgrade or
    /// reinstall wrote PyTorch's over ours.
    pub(crate) fn ours_was_replaced(&self) -> bool {
        self.backup.is_some() && !self.runs_ours()
    }

    /// `--python <it>`, for the commands we suggest.
    pub(crate) fn python_arg(&self) -> String {
        format!("--python {}", self.site.python.display())
    }
}

fn identify_if_present(path: &Path, record: Option<&str>) -> Result<Option<Identity>, TorchError> {
    match identify(path, record) {
        Ok(identity) => Ok(Some(identity)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(TorchError::io("read", path, err)),
    }
}

fn site_of(arg: &PythonArg) -> Result<Site, TorchError> {
    let python = find_python(arg.python.as_deref())?;
    locate(&python)
}

fn status(args: &PythonArg) -> Outcome {
    let report = Report::inspect(site_of(args)?)?;
    let site = &report.site;
    println!(
        "torch {} at {} (through {})",
        site.version,
        site.package.display(),
        site.python.display()
    );
    let live = report.live.as_ref().map_or_else(
        || "missing (import torch fails)".to_owned(),
        Identity::to_string,
    );
    println!("torch runs {}: {live}", site.manager().display());
    if let Some(backup) = &report.backup {
        println!("backup: {} is {backup}", site.backup().display());
    }
    if report.running.is_empty() {
        println!("running from it: none");
    } else {
        for (pid, identity) in &report.running {
            println!("running from it: pid {pid}, {identity}");
        }
    }
    if report.ours_was_replaced() {
        println!(
            "warning: torch runs {live} again although ours was installed: a torch upgrade or \
             reinstall put it back. Fix: shmctl torch install {}",
            report.python_arg()
        );
    } else if !report.runs_ours() {
        println!("to run ours: shmctl torch install {}", report.python_arg());
    }
    Ok(if report.runs_ours() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn install(args: &ChangeArgs) -> Outcome {
    let ours = our_manager()?;
    let site = site_of(&args.python)?;
    let report = Report::inspect(site)?;
    let site = &report.site;
    let (live, backup) = (site.manager(), site.backup());
    println!("torch {} at {}", site.version, site.package.display());
    let Some(live_identity) = &report.live else {
        return Err(TorchError::NoManagerFile { path: live }.into());
    };
    refuse_if_running(&report, args.force)?;
    if live_identity.is_ours() {
        if report.backup.is_none() {
            println!(
                "note: ours is already at {} but PyTorch's was not kept; to go back, \
                 reinstall torch (pip install --force-reinstall --no-deps torch=={})",
                live.display(),
                site.version
            );
        }
    } else {
        if report.backup.is_some() {
            println!(
                "replacing the old backup: torch's own manager came back (an upgrade?), so it is the one to keep"
            );
        }
        let digest = swap::replace(&live, &backup)?;
        println!(
            "kept the original, {live_identity}, at {} (sha256 {})",
            backup.display(),
            digest.hex()
        );
    }
    let wanted = sha256::of_file(&ours.path).map_err(|e| TorchError::io("read", &ours.path, e))?;
    if sha256::of_file(&live).is_ok_and(|digest| digest == wanted) {
        println!(
            "already installed: libshm-rs shm-manager {} at {}",
            ours.version,
            live.display()
        );
    } else {
        let digest = match swap::replace(&ours.path, &live) {
            Ok(digest) => digest,
            Err(err) => {
                // PyTorch's is still live: a backup beside it would read as
                // "an upgrade put PyTorch's back over ours".
                if !live_identity.is_ours() {
                    let _ = std::fs::remove_file(&backup);
                }
                return Err(err.into());
            }
        };
        println!(
            "installed libshm-rs shm-manager {} at {} (sha256 {})",
            ours.version,
            live.display(),
            digest.hex()
        );
    }
    match trial::run(&live) {
        Ok(trial) => {
            println!(
                "checked: it served at {} and exited {:.1} s after its client left",
                trial.handle,
                trial.exited_after.as_secs_f64()
            );
            println!("undo with: shmctl torch restore {}", report.python_arg());
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            let rolled_back = backup.exists();
            if rolled_back {
                swap::replace(&backup, &live)?;
                std::fs::remove_file(&backup).map_err(|e| TorchError::io("remove", &backup, e))?;
            }
            Err(TorchError::CheckFailed {
                path: live,
                why,
                rolled_back,
            }
            .into())
        }
    }
}

fn restore(args: &ChangeArgs) -> Outcome {
    let site = site_of(&args.python)?;
    let report = Report::inspect(site)?;
    let site = &report.site;
    let (live, backup) = (site.manager(), site.backup());
    println!("torch {} at {}", site.version, site.package.display());
    let Some(_) = &report.backup else {
        return match &report.live {
            Some(identity) if identity.is_ours() => Err(TorchError::NoBackup {
                path: live,
                torch_version: site.version.clone(),
            }
            .into()),
            Some(identity) => {
                println!("nothing to restore: torch runs {identity}");
                Ok(ExitCode::SUCCESS)
            }
            None => Err(TorchError::NoManagerFile { path: live }.into()),
        };
    };
    match &report.live {
        Some(Identity::Ours { .. }) | None => {}
        Some(identity @ Identity::Pytorch(_)) => {
            std::fs::remove_file(&backup).map_err(|e| TorchError::io("remove", &backup, e))?;
            println!(
                "nothing to restore: torch already runs {identity} (an upgrade or reinstall put \
                 it back); removed the stale backup {}",
                backup.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Identity::Unknown) if !args.force => {
            return Err(TorchError::LiveUnrecognised { path: live }.into());
        }
        Some(Identity::Unknown) => {}
    }
    refuse_if_running(&report, args.force)?;
    let digest = swap::replace(&backup, &live)?;
    std::fs::remove_file(&backup).map_err(|e| TorchError::io("remove", &backup, e))?;
    let record = match site.record.as_deref() {
        Some(record) if digest.record_form() == record => "; it matches torch's RECORD",
        Some(_) => "; note: it differs from the hash torch's RECORD lists",
        None => "",
    };
    println!(
        "restored {} byte for byte from the backup (sha256 {}){record}",
        live.display(),
        digest.hex()
    );
    Ok(ExitCode::SUCCESS)
}

fn refuse_if_running(report: &Report, force: bool) -> Result<(), TorchError> {
    if report.running.is_empty() {
        return Ok(());
    }
    let pids: Vec<u32> = report.running.iter().map(|(pid, _)| *pid).collect();
    if force {
        println!(
            "--force: managers still running from it (pid {pids:?}) keep the binary they started with"
        );
        return Ok(());
    }
    Err(TorchError::ManagerRunning {
        path: report.site.manager(),
        pids,
    })
}

/// Our `shm-manager`, to install.
struct OurManager {
    path: PathBuf,
    version: String,
}

/// `$LIBSHM_MANAGER`, else `shm-manager` beside this `shmctl` (where pip
/// and cargo both put it); checked to be ours.
fn our_manager() -> Result<OurManager, TorchError> {
    let path = match std::env::var_os(ENV_MANAGER).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().map_err(|e| TorchError::io("locate", "shmctl", e))?;
            exe.with_file_name(libshm::MANAGER_BIN)
        }
    };
    match identify(&path, None) {
        Ok(Identity::Ours { version }) => Ok(OurManager { path, version }),
        Ok(_) => Err(TorchError::NotOurManager { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err(TorchError::OurManagerNotFound { looked: vec![path] })
        }
        Err(err) => Err(TorchError::io("read", &path, err)),
    }
}
