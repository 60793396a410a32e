//! `Parser::parse` throughput on generated protocol-5 streams.
//!
//! Three shapes, each written here by a small pickler that frames like
//! CPython's (64 KiB frames, large payloads outside frames) and memoizes
//! every value, so the opcode mix matches real files:
//! - `small_objects`: a dict of many small NumPy arrays, as
//!   `numpy._core.numeric._frombuffer(bytearray, dtype, shape, order)`;
//!   the object-heavy case (about six nodes per 100 bytes).
//! - `model`: estimator-like objects (`NEWOBJ` + `BUILD` with a dict of
//!   floats, ints, strings, tuples and lists), as in a fitted forest.
//! - `big_bytes`: a list of large `bytes` payloads; bounded by slicing.
//!
//! Run with `cargo bench -p amber-pickle --bench parse`.

use amber_pickle::Parser;
use divan::counter::BytesCount;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const FRAME_TARGET: usize = 64 * 1024;

/// A protocol-5 pickler for the few shapes above.
struct Writer {
    out: Vec<u8>,
    frame: Vec<u8>,
    memo: u32,
}

impl Writer {
    fn new() -> Self {
        Writer {
            out: vec![0x80, 5],
            frame: Vec::new(),
            memo: 0,
        }
    }

    fn flush_frame(&mut self) {
        if !self.frame.is_empty() {
            self.out.push(0x95);
            self.out
                .extend_from_slice(&(self.frame.len() as u64).to_le_bytes());
            self.out.append(&mut self.frame);
        }
    }

    fn op(&mut self, bytes: &[u8]) {
        self.frame.extend_from_slice(bytes);
        if self.frame.len() >= FRAME_TARGET {
            self.flush_frame();
        }
    }

    /// `MEMOIZE`; returns the slot.
    fn memoize(&mut self) -> u32 {
        self.op(&[0x94]);
        self.memo += 1;
        self.memo - 1
    }

    fn get(&mut self, slot: u32) {
        match u8::try_from(slot) {
            Ok(s) => self.op(&[b'h', s]),
            Err(_) => {
                let mut op = vec![b'j'];
                op.extend_from_slice(&slot.to_le_bytes());
                self.op(&op);
            }
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        let mut op = vec![0x8c, s.len() as u8];
        op.extend_from_slice(s.as_bytes());
        self.op(&op);
        self.memoize()
    }

    fn int(&mut self, v: u8) {
        self.op(&[b'K', v]);
    }

    fn float(&mut self, v: f64) {
        let mut op = vec![b'G'];
        op.extend_from_slice(&v.to_be_bytes());
        self.op(&op);
    }

    fn global(&mut self, module: &str, name: &str) -> u32 {
        self.str(module);
        self.str(name);
        self.op(&[0x93]);
        self.memoize()
    }

    /// A byte payload (`BYTEARRAY8` or `BINBYTES8`); large ones go outside
    /// frames, as CPython's framer does.
    fn payload(&mut self, opcode: u8, data: &[u8]) {
        let mut head = vec![opcode];
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        if data.len() >= FRAME_TARGET {
            self.flush_frame();
            self.out.extend_from_slice(&head);
            self.out.extend_from_slice(data);
        } else {
            self.op(&head);
            self.op(data);
        }
        self.memoize();
    }

    fn finish(mut self) -> Vec<u8> {
        self.op(b".");
        self.flush_frame();
        self.out
    }
}

/// A dict of `n` small float arrays pickled the NumPy 2 way.
fn small_objects(n: usize) -> Vec<u8> {
    let mut w = Writer::new();
    w.op(b"}");
    w.memoize();
    let mut frombuffer = None;
    let mut dtype = None;
    let mut order = None;
    let data: Vec<u8> = (0..80u8).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        w.op(b"(");
        for &i in chunk {
            w.str(&format!("k{i}"));
            match frombuffer {
                Some(s) => w.get(s),
                None => frombuffer = Some(w.global("numpy._core.numeric", "_frombuffer")),
            }
            w.op(b"(");
            w.payload(0x96, &data);
            match dtype {
                Some(s) => w.get(s),
                None => {
                    w.global("numpy", "dtype");
                    w.str("f8");
                    w.op(&[0x89, 0x88, 0x87]);
                    w.memoize();
                    w.op(b"R");
                    dtype = Some(w.memoize());
                }
            }
            w.int(10);
            w.op(&[0x85]);
            w.memoize();
            match order {
                Some(o) => w.get(o),
                None => order = Some(w.str("C")),
            }
            w.op(b"t");
            w.memoize();
            w.op(b"R");
            w.memoize();
        }
        w.op(b"u");
    }
    w.finish()
}

/// `n` estimator-like objects in a list, each `NEWOBJ` + `BUILD` with a
/// dict state of scalars, a tuple and a list of floats.
fn model(n: usize) -> Vec<u8> {
    let mut w = Writer::new();
    w.op(b"]");
    w.memoize();
    let cls = w.global("sklearn.tree._classes", "DecisionTreeClassifier");
    w.op(b"0");
    let keys = [
        "criterion",
        "max_depth",
        "min_samples_split",
        "n_features_in_",
    ];
    let mut key_slots = Vec::new();
    w.op(b"(");
    for i in 0..n {
        w.get(cls);
        w.op(&[b')', 0x81]);
        w.memoize();
        w.op(b"}");
        w.memoize();
        w.op(b"(");
        for (k, key) in keys.iter().enumerate() {
            match key_slots.get(k) {
                Some(&s) => w.get(s),
                None => key_slots.push(w.str(key)),
            }
            w.int((i % 200) as u8);
        }
        w.str("thresholds");
        w.op(b"]");
        w.memoize();
        w.op(b"(");
        for j in 0..8 {
            w.float(j as f64 * 0.5);
        }
        w.op(b"e");
        w.str("shape");
        w.int(3);
        w.int(2);
        w.op(&[0x86]);
        w.memoize();
        w.op(b"u");
        w.op(b"b");
    }
    w.op(b"e");
    w.finish()
}

/// A list of `n` byte strings of `len` bytes each.
fn big_bytes(n: usize, len: usize) -> Vec<u8> {
    let mut w = Writer::new();
    w.op(b"]");
    w.memoize();
    w.op(b"(");
    let data = vec![0xa5u8; len];
    for _ in 0..n {
        w.payload(0x8e, &data);
    }
    w.op(b"e");
    w.finish()
}

/// Time `parse` on `data`, which must parse with `events` events (so that
/// containers grew as literals); the result is dropped outside the timing.
fn run(bencher: Bencher<'_, '_>, data: &[u8], events: usize) {
    let found = Parser::new(data).parse().map(|p| p.graph().events().len());
    assert_eq!(found, Ok(events), "the generated stream must parse");
    bencher
        .counter(BytesCount::of_slice(data))
        .bench_local(|| Parser::new(black_box(data)).parse());
}

#[divan::bench(args = [1_000, 100_000])]
fn small_objects_dict(bencher: Bencher<'_, '_>, n: usize) {
    run(bencher, &small_objects(n), 0);
}

#[divan::bench(args = [100, 10_000])]
fn model_like(bencher: Bencher<'_, '_>, n: usize) {
    run(bencher, &model(n), n);
}

#[divan::bench]
fn big_byte_strings(bencher: Bencher<'_, '_>) {
    run(bencher, &big_bytes(16, 1 << 20), 0);
}
