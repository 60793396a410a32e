//! Time `Parser::parse` on pickle files: `parse_file FILE... [-n RUNS]`.
//!
//! Prints, per file, the median and best wall time of the runs (ms and
//! MB/s) with the node count and, on Linux, the median time the thread
//! actually spent on a CPU (from `/proc/thread-self/schedstat`), which
//! stays meaningful on a loaded machine. For quick before/after
//! comparisons on real streams; the benches in `benches/` use generated ones.

use std::time::Instant;

use amber_pickle::Parser;

/// Nanoseconds this thread has run on a CPU, if the kernel says.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = 5usize;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-n" {
            runs = args.next().ok_or("-n needs a number")?.parse()?;
        } else {
            files.push(a);
        }
    }
    for file in files {
        let data = std::fs::read(&file)?;
        let mut wall = Vec::with_capacity(runs);
        let mut cpu = Vec::with_capacity(runs);
        let mut nodes = 0;
        for _ in 0..runs.max(1) {
            let c = cpu_ns();
            let t = Instant::now();
            let p = Parser::new(&data).out_of_band_buffers(1_000_000).parse()?;
            wall.push(t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (c, cpu_ns()) {
                #[expect(clippy::cast_precision_loss, reason = "display only")]
                cpu.push(b.saturating_sub(a) as f64 / 1e9);
            }
            nodes = p.graph().len();
            drop(p);
        }
        let med = median(&mut wall);
        let best = wall.first().copied().unwrap_or_default();
        #[expect(clippy::cast_precision_loss, reason = "display only")]
        let mb = data.len() as f64 / 1e6;
        let cpu = if cpu.is_empty() {
            String::new()
        } else {
            format!("; on-CPU {:.2} ms", median(&mut cpu) * 1e3)
        };
        println!(
            "{file}: {:.2} ms, {:.0} MB/s median; {:.2} ms best{cpu}; {nodes} nodes, {runs} runs",
            med * 1e3,
            mb / med,
            best * 1e3
        );
    }
    Ok(())
}
