//! Every entry point of `amber-pickle` on arbitrary bytes: nothing may
//! panic, hang or allocate without bound.
//!
//! The first byte selects a start offset (for `parse_prefix`), the rest is
//! the input. Seed the corpus with `crates/amber-pickle/tests/data/*.pkl`.
//! Parsing with and without a listing must agree exactly (a listing turns
//! the machine's fast path off), with joblib's hook or without.

#![no_main]

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{Parser, TreeOptions, disassemble, parse, parse_prefix, render_tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };

    // Strict, whole input.
    if let Ok(p) = parse(data) {
        assert_eq!(p.end() as usize, data.len());
        let _ = render_tree(p.graph(), p.root(), &TreeOptions::default());
        for (id, _) in p.graph().iter() {
            // Every edge leads to a value: leaves decode from the input.
            for child in p.graph().children(id) {
                assert!(p.graph().get(child).is_some(), "{child} of {id}");
            }
        }
        assert!(p.graph().get(p.root()).is_some());
        let _ = p.graph().event_index();
    }

    // Lenient, from an offset chosen by the first byte.
    let start = usize::from(selector) % (data.len() + 1);
    if let Ok(p) = parse_prefix(data, start) {
        assert!(p.start() as usize == start && p.end() as usize <= data.len());
    }

    // The joblib hook with a recorded listing.
    let mut hook = JoblibHook::new();
    if let Ok(p) = Parser::new(data)
        .hook(&mut hook)
        .allow_trailing(true)
        .record_listing(true)
        .parse()
    {
        let _ = p.listing().map(ToString::to_string);
        for array in hook.arrays() {
            assert!(array.data_offset as usize <= data.len());
        }
    }

    // The fast path (off while a listing is recorded) changes nothing,
    // with joblib's hook (odd selectors) or without.
    let joblib = selector % 2 == 1;
    let outcome = |listing: bool| {
        let mut hook = JoblibHook::new();
        let mut parser = Parser::new(data)
            .allow_trailing(true)
            .record_listing(listing);
        if joblib {
            parser = parser.hook(&mut hook);
        }
        let parsed = parser.parse().map(|p| {
            format!(
                "{:?} {:?} {:?} {}",
                p.graph(),
                p.stats(),
                p.globals(),
                p.root()
            )
        });
        (parsed, hook.arrays().to_vec())
    };
    assert_eq!(outcome(false), outcome(true));

    // The stand-alone disassembler.
    let _ = disassemble(data, 0).to_string();
});
