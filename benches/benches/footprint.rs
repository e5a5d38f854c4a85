//! The manager's start-up time (spawn to handle line) and memory (resident and
//! anonymous) idle, with 10,000 live registrations and after they end; ours
//! beside PyTorch's. Medians of repeated launches.

use std::time::{Duration, Instant};

use libshm::client::Client;
use libshm_benches::{median_of, our_manager, stop_manager, torch_manager};
use libshm_core::client::AckMode;
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_unix::{Launcher, UnixTransport};

const LAUNCHES: usize = 15;

fn main() {
    let mut managers = vec![("shm-manager", our_manager())];
    if let Some(torch) = torch_manager() {
        managers.push(("torch_shm_manager", torch));
    } else {
        eprintln!("PyTorch peer not installed: measuring our manager only");
    }
    println!("manager start-up: spawn to handle line (median of {LAUNCHES})");
    for (name, executable) in &managers {
        let mut times = Vec::new();
        for _ in 0..LAUNCHES {
            let start = Instant::now();
            let launched = Launcher::new(executable)
                .quiet(true)
                .launch()
                .expect("launch");
            times.push(start.elapsed());
            stop_manager(&launched);
        }
        println!(
            "  {name:<18} {:>10.2?}",
            median_of(&times).unwrap_or_default()
        );
    }

    println!("\nmanager memory (kB: VmRSS / RssAnon) with live registrations");
    for (name, executable) in &managers {
        let launched = Launcher::new(executable)
            .args(["--name-prefix", "/benchmem_"])
            .quiet(true)
            .launch()
            .expect("launch");
        let transport = UnixTransport::connect(&launched.handle, None).expect("connect");
        let mut client: Client<_, 64> =
            Client::new(transport, AckMode::Pipelined { max_in_flight: 32 });
        let prefix = NamePrefix::new(b"/benchmem_").expect("prefix");
        let pid = std::process::id();
        let mut line = format!("  {name:<18}");
        let mut registered = 0u64;
        for target in [0u64, 2_500, 5_000, 10_000] {
            while registered < target {
                let name = SegmentName::generate(&prefix, pid, 1, registered).expect("name");
                client.register(pid as i32, name).expect("register");
                registered += 1;
            }
            client.settle().expect("settle");
            let (rss, anon) = memory(launched.pid);
            line.push_str(&format!("  {target}: {rss}/{anon}"));
        }
        for i in 0..registered {
            let name = SegmentName::generate(&prefix, pid, 1, i).expect("name");
            client.release(pid as i32, name, false).expect("release");
        }
        client.settle().expect("settle");
        // Released names are forgotten by the next sweep (once a second).
        std::thread::sleep(Duration::from_millis(2_500));
        let (rss, anon) = memory(launched.pid);
        line.push_str(&format!("  released: {rss}/{anon}"));
        println!("{line}");
        drop(client);
        stop_manager(&launched);
    }
}

/// VmRSS and RssAnon of `pid` in kB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}
