//! Times writing case (a) of the benchmark (1 GiB of random float64 in [0, 1)
//! and 256 MiB of int32 in 0..1000) as array entries, uncompressed and with
//! zstd level 3, interleaved (for the speed figures in reports, not a test):
//! `cargo run --release -p amber-format --example dumptime -- [RUNS] [DIR]`
//! Prints the best and median wall time of each. `DUMPTIME_ONLY=floats|ints`,
//! `DUMPTIME_MODE=none|zstd3` and `DUMPTIME_CHUNK=<bytes>` narrow a run down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Instant;

use amber_format::codec::{Codec, DEFAULT_CHUNK_SIZE, Settings};
use amber_format::write::ArrayItem;
use amber_format::{ContainerWriter, Output, Sink};

/// User plus system CPU seconds of this process so far (from `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(7, |a| a.parse().unwrap());
    let dir = args.next().unwrap_or_else(|| "/tmp".to_owned());
    let scale: usize = std::env::var("DUMPTIME_SCALE").map_or(1, |s| s.parse().unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let floats: Vec<u8> = (0..(1usize << 27) / scale)
        .flat_map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64).to_le_bytes())
        .collect();
    let ints: Vec<u8> = (0..(1usize << 26) / scale)
        .flat_map(|_| ((next() >> 32) as u32 % 1000).to_le_bytes())
        .collect();
    let which: Vec<String> = std::env::var("DUMPTIME_ONLY").map_or_else(
        |_| vec!["floats".into(), "ints".into()],
        |s| s.split(',').map(str::to_owned).collect(),
    );
    let items: Vec<ArrayItem<'_>> = [
        ("floats", "arrays/0.npy.zst", &floats, 8, 0),
        ("ints", "arrays/1.npy.zst", &ints, 4, 1),
    ]
    .into_iter()
    .filter(|(label, ..)| which.iter().any(|w| w == label))
    .map(|(_, name, data, itemsize, kind)| ArrayItem {
        name,
        header: &[0u8; 64],
        data,
        itemsize,
        kind,
    })
    .collect();
    let settings = Settings {
        codec: Codec::Zstd(3),
        itemsize: 1,
        chunk_size: std::env::var("DUMPTIME_CHUNK")
            .map_or(DEFAULT_CHUNK_SIZE, |s| s.parse().unwrap()),
    };
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut sizes = [0u64; 2];
    for run in 0..runs {
        for (k, s) in [None, Some(settings)].into_iter().enumerate() {
            if std::env::var("DUMPTIME_MODE").is_ok_and(|m| m != ["none", "zstd3"][k]) {
                times[k].push(0.0);
                cpu[k].push(0.0);
                continue;
            }
            let target = std::path::PathBuf::from(format!("{dir}/dumptime-{run}-{k}.amber"));
            let output = Output::Path {
                target,
                overwrite: true,
                sync: false,
            };
            let c = cpu_seconds();
            let t = Instant::now();
            let mut writer = ContainerWriter::new(Sink::create(&output).unwrap(), "x").unwrap();
            let records = writer.add_arrays(&items, s).unwrap();
            let elapsed = t.elapsed().as_secs_f64();
            times[k].push(elapsed);
            cpu[k].push(cpu_seconds() - c);
            sizes[k] = records.iter().map(|(e, _)| e.size).sum();
            drop(writer);
        }
    }
    for (k, name) in ["none", "zstd3"].iter().enumerate() {
        let v = &mut times[k];
        v.sort_by(f64::total_cmp);
        let c = &mut cpu[k];
        c.sort_by(f64::total_cmp);
        println!(
            "{name:6} best {:.3} s  median {:.3} s  cpu best {:.2} s median {:.2} s  {:.1} MB",
            v[0],
            v[v.len() / 2],
            c[0],
            c[c.len() / 2],
            sizes[k] as f64 / 1e6
        );
    }
    println!(
        "zstd/none best {:.2}  median {:.2}",
        times[1][0] / times[0][0],
        times[1][runs / 2] / times[0][runs / 2]
    );
}
