//! Times decoding every array of an amber file into fresh buffers, with 1 and
//! 2 threads, and prints the filters used and MB/s of decoded bytes (for the
//! speed figures in reports, not a test):
//! `cargo run --release -p amber-format --example decodetime -- FILE [RUNS]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::BTreeMap;
use std::time::Instant;

use amber_format::{Container, EntryInfo, MapMode, map_file};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("an amber file"));
    let runs: usize = args.next().map_or(15, |a| a.parse().unwrap());
    let map = map_file(&path, MapMode::ReadOnly).unwrap();
    let container = Container::parse(map).unwrap();
    let mut filters: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for info in &container.manifest().entries {
        if let EntryInfo::Array(a) = info {
            let key = format!(
                "{} {} itemsize {}",
                a.codec.as_deref().unwrap_or("none"),
                a.filter.as_deref().unwrap_or("none"),
                a.dtype
            );
            let e = filters.entry(key).or_default();
            e.0 += 1;
            e.1 += a.nbytes;
        }
    }
    for (k, (n, bytes)) in &filters {
        println!("{n:5} arrays {:8.1} MB  {k}", *bytes as f64 / 1e6);
    }
    let arrays = container.arrays();
    let total: u64 = arrays.iter().map(|(_, l)| l.nbytes).sum();
    let mut buffers: Vec<Vec<u8>> = arrays
        .iter()
        .map(|(_, l)| vec![0u8; l.nbytes as usize])
        .collect();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..runs {
            let dests: Vec<(usize, &mut [u8])> = buffers
                .iter_mut()
                .enumerate()
                .map(|(i, b)| (i, b.as_mut_slice()))
                .collect();
            let t = Instant::now();
            pool.install(|| container.copy_arrays_into(dests)).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{threads} thread(s): best {:.2} ms ({:.0} MB/s), median {:.2} ms ({:.0} MB/s), {:.1} MB decoded",
            times[0] * 1e3,
            total as f64 / times[0] / 1e6,
            times[runs / 2] * 1e3,
            total as f64 / times[runs / 2] / 1e6,
            total as f64 / 1e6
        );
    }
}
