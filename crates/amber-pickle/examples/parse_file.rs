//! Time `Parser::parse` on pickle files: `parse_file FILE... [-n RUNS]`.
//!
//! Prints the median of the runs in ms and MB/s, the best run, with the node count, for
//! quick before/after comparisons on real streams (the benches in
//! `benches/` use generated ones).

use std::time::Instant;

use amber_pickle::Parser;

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
        let mut times = Vec::with_capacity(runs);
        let mut nodes = 0;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let p = Parser::new(&data).out_of_band_buffers(1_000_000).parse()?;
            times.push(t.elapsed().as_secs_f64());
            nodes = p.graph().len();
            drop(p);
        }
        times.sort_by(f64::total_cmp);
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let best = times.first().copied().unwrap_or_default();
        #[expect(clippy::cast_precision_loss, reason = "display only")]
        let mb = data.len() as f64 / 1e6;
        println!(
            "{file}: {:.2} ms, {:.0} MB/s median; {:.2} ms best; {nodes} nodes, {runs} runs",
            median * 1e3,
            mb / median,
            best * 1e3
        );
    }
    Ok(())
}
