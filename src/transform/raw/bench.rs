//! Reference (`Document` + `serde_json::Value`) vs raw BSON → JSON conversion, per document, on
//! ~1 KB documents shaped like bench/dataset.js's. Ignored by `cargo test`; run on demand:
//!
//!   cargo test --release --lib transform::raw::bench -- --ignored --nocapture
//!   RAW_BENCH_DOCS=100000 RAW_BENCH_ONLY=raw cargo test --release --lib transform::raw::bench -- --ignored --nocapture
//!
//! Prints ns/doc (best of 5 rounds) and heap allocations and bytes per document. (A bench target
//! of its own would link the napi functions, which only node provides; the lib's test binary
//! does not.) The allocation counter is the test binary's global allocator: counting is on only
//! in the thread that measures, other tests just pass through.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Instant;

use crate::transform::{index_write, ConvertOptions, DocumentWrite, FieldRules, RawConverter, Rejected, WriteOp};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Decimal128, Document, RawDocumentBuf};

/// The system allocator, counting the allocations of the threads that ask it to.
struct Counting;

thread_local! {
    /// (counting, allocations, bytes) of this thread.
    static COUNT: (Cell<bool>, Cell<u64>, Cell<u64>) = const { (Cell::new(false), Cell::new(0), Cell::new(0)) };
}

fn count(size: usize) {
    // `try_with`: nothing is counted while the thread-local is being torn down.
    let _ = COUNT.try_with(|(on, allocations, bytes)| {
        if on.get() {
            allocations.set(allocations.get() + 1);
            bytes.set(bytes.get() + size as u64);
        }
    });
}

fn counted() -> (u64, u64) {
    COUNT.with(|(_, allocations, bytes)| (allocations.get(), bytes.get()))
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic documents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Between `lo` and `hi` words.
    fn words(&mut self, lo: i64, hi: i64) -> String {
        let n = self.int(lo, hi);
        (0..n).map(|_| self.pick(WORDS)).collect::<Vec<_>>().join(" ")
    }
    fn money(&mut self, max_cents: i64) -> Decimal128 {
        let cents = self.int(0, max_cents);
        format!("{}.{:02}", cents / 100, cents % 100).parse().expect("a decimal")
    }
}

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "river", "mountain", "coffee", "paper", "window", "garden", "silver", "orange", "market", "station", "winter", "summer",
    "signal", "vector", "kernel", "socket", "planet", "harbor", "forest", "copper", "engine", "rapid", "quiet", "bright", "heavy", "modern",
];
const CITIES: &[&str] = &["Lisbon", "Berlin", "Osaka", "Quito", "Nairobi", "Oslo", "Austin", "Porto", "Lyon", "Perth"];
const STATUSES: &[&str] = &["new", "paid", "shipped", "delivered", "returned", "cancelled"];
const BASE: i64 = 1_704_067_200_000; // 2024-01-01

fn document(r: &mut Rng, i: i64) -> Document {
    let items: Vec<Bson> = (0..r.int(2, 4))
        .map(|_| {
            Bson::Document(doc! {
                "sku": format!("SKU-{}", r.int(10_000, 99_999)),
                "qty": r.int(1, 20) as i32,
                "price": r.int(100, 99_999) as f64 / 100.0,
                "total": r.money(999_999),
                "note": r.words(2, 5),
            })
        })
        .collect();
    let seq64 = if r.int(0, 7) == 0 { (1_i64 << 53) * r.int(1, 1000) + r.int(1, 1 << 30) } else { r.int(0, 1 << 40) };
    let mut uuid = r.bytes(16);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    doc! {
        "_id": ObjectId::new(),
        "seq": i as i32,
        "name": format!("{} {} {i}", r.pick(WORDS), r.pick(WORDS)),
        "email": format!("user{}@example.com", r.int(1, 1_000_000)),
        "status": r.pick(STATUSES),
        "active": r.int(0, 9) < 8,
        "verified": r.int(0, 9) < 3,
        "rating": r.int(0, 5000) as f64 / 1000.0,
        "count32": r.int(-100_000, 100_000) as i32,
        "seq64": seq64,
        "balance": r.money(99_999_999),
        "createdAt": DateTime::from_millis(BASE + r.int(0, 365 * 86_400) * 1000 + r.int(0, 999)),
        "updatedAt": DateTime::from_millis(BASE + r.int(365 * 86_400, 400 * 86_400) * 1000),
        "description": r.words(25, 35),
        "tags": (0..r.int(1, 5)).map(|_| Bson::String(r.pick(WORDS).to_owned())).collect::<Vec<_>>(),
        "customer": {
            "name": format!("{} {}", r.pick(WORDS), r.pick(WORDS)),
            "address": {
                "street": format!("{} {} street", r.int(1, 999), r.pick(WORDS)),
                "city": r.pick(CITIES),
                "zip": r.int(10_000, 99_999).to_string(),
                "geo": { "lat": r.int(-90_000, 90_000) as f64 / 1000.0, "lon": r.int(-180_000, 180_000) as f64 / 1000.0 },
            },
            "loyalty": { "level": r.int(0, 5) as i32, "since": DateTime::from_millis(BASE - r.int(0, 2000) * 86_400_000) },
        },
        "items": items,
        "checksum": Binary { subtype: BinarySubtype::Generic, bytes: {
            let n = r.int(24, 40) as usize;
            r.bytes(n)
        } },
        "ref": Binary { subtype: BinarySubtype::Uuid, bytes: uuid },
    }
}

struct Figures {
    ns: f64,
    allocations: f64,
    bytes: f64,
}

/// Best of `rounds` over all documents, per document; allocations of the last round.
fn measure(docs: usize, rounds: usize, mut run: impl FnMut() -> usize) -> Figures {
    let mut best = f64::MAX;
    let (mut allocations, mut bytes) = (0, 0);
    COUNT.with(|(on, _, _)| on.set(true));
    for _ in 0..rounds {
        let (a0, b0) = counted();
        let start = Instant::now();
        black_box(run());
        best = best.min(start.elapsed().as_nanos() as f64);
        let (a1, b1) = counted();
        (allocations, bytes) = (a1 - a0, b1 - b0);
    }
    COUNT.with(|(on, _, _)| on.set(false));
    let n = docs as f64;
    Figures { ns: best / n, allocations: allocations as f64 / n, bytes: bytes as f64 / n }
}

#[test]
#[ignore = "a benchmark: run on demand, in release (see the module doc)"]
fn reference_vs_raw_conversion() {
    let count: usize = std::env::var("RAW_BENCH_DOCS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let rounds = 5;
    // RAW_BENCH_ONLY=raw: only the raw converter (e.g. under `perf record`).
    let only_raw = std::env::var("RAW_BENCH_ONLY").is_ok_and(|v| v == "raw");
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let raws: Vec<RawDocumentBuf> = (0..count).map(|i| RawDocumentBuf::from_document(&document(&mut r, i as i64)).expect("BSON")).collect();
    let avg = raws.iter().map(|d| d.as_bytes().len()).sum::<usize>() / count;
    println!("{count} documents, {avg} bytes of BSON on average; best of {rounds} rounds; per document:");
    let options = ConvertOptions::default();
    let rule_sets = [
        ("no field rules", FieldRules::default()),
        ("exclude 2 paths", FieldRules { exclude: vec!["email".into(), "items.note".into()], ..Default::default() }),
        ("rename + flatten", FieldRules { rename: vec![("customer.address.city".into(), "city".into())], flatten: Some(".".into()), ..Default::default() }),
    ];
    println!("| case | path | ns/doc | allocations/doc | bytes allocated/doc |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (name, rules) in &rule_sets {
        let row = |path: &str, f: Figures| println!("| {name} | {path} | {:.0} | {:.1} | {:.0} |", f.ns, f.allocations, f.bytes);
        let converter = RawConverter::new(&options, rules);
        let raw = measure(count, rounds, || raws.iter().map(|doc| body_len(converter.index_write(doc, 1, &mut Vec::new()))).sum());
        if only_raw {
            row("raw", raw);
            continue;
        }
        // Today: the driver deserialises each raw document into a `Document` (serde), then converts.
        let driver_and_reference = measure(count, rounds, || {
            let mut total = 0;
            for raw in &raws {
                let doc: Document = mongodb::bson::from_slice(raw.as_bytes()).expect("a document");
                total += body_len(index_write(&doc, 1, &options, rules, &mut Vec::new()));
            }
            total
        });
        let docs: Vec<Document> = raws.iter().map(|raw| Document::try_from(raw.as_ref()).expect("a document")).collect();
        for (raw, doc) in raws.iter().zip(&docs) {
            assert_eq!(converter.index_write(raw, 1, &mut Vec::new()), index_write(doc, 1, &options, rules, &mut Vec::new()), "the same writes");
        }
        let reference_only = measure(count, rounds, || docs.iter().map(|doc| body_len(index_write(doc, 1, &options, rules, &mut Vec::new()))).sum());
        row("driver `Document` + reference", driver_and_reference);
        row("reference, given the `Document`", reference_only);
        row("raw", raw);
    }
}

fn body_len(write: Result<DocumentWrite, Rejected>) -> usize {
    match write.map(|w| w.op) {
        Ok(WriteOp::Index(body)) => body.len(),
        _ => 0,
    }
}
