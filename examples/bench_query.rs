//! Query benchmark (a measurement, not a test: it prints figures and asserts nothing on time).
//!
//! Builds a 1,000,000-object database directly with SQL — one bucket, keys spread over 100
//! prefixes, every object with an `owner` (200 values, 0.5% each), 70% with a `project`
//! (`apollo` 40%, `gemini` exactly 1%, `mercury` 0.01%, others spread), a third with a unique
//! `checksum` — then times `query --count` and `query --limit 100` through the query code
//! (`s3meta::read::query::run`, as the binary calls it, output to memory), `names`, and prints the
//! SQLite plan. Run with `cargo run --release --example bench_query [OBJECTS]`.

#[path = "support/index.rs"]
mod index;
use index::Bench;
use std::time::{Duration, Instant};

use s3meta::read::names::NamesOptions;
use s3meta::read::output::Format;
use s3meta::read::query::QueryOptions;
use s3meta::read::query::{self, Plan, Scope, Selection, filter::Filter};

const DEFAULT_OBJECTS: u64 = 1_000_000;
const RUNS: usize = 7;

fn main() -> anyhow::Result<()> {
    let bench = Bench::open(DEFAULT_OBJECTS)?;
    let (path, n) = (bench.path.clone(), bench.objects);
    println!(
        "built {n} objects in {:.1}s ({} MB)",
        bench.built_in.as_secs_f64(),
        bench.bytes / 1_000_000
    );
    let conn = s3meta::store::db::open_ro(&path)?;
    for filters in [
        vec!["project=gemini"],
        vec!["project=mercury"],
        vec!["project=nosuch"],
        vec!["project=gemini", "owner=user1"],
        vec!["project=gemini", "@size>1000"],
        vec!["!project"],
        vec!["project~gem*"],
        vec!["checksum"],
        vec![],
    ] {
        let parsed: Vec<Filter> = filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<_, _>>()?;
        let sel = Selection::new(&Scope::default(), &parsed, Plan::Index);
        let matches = query::count(&conn, &sel)?;
        let plan = query::choose_plan(&conn, &parsed)?;
        let count = time(&path, &filters, None, true)?;
        let limit = time(&path, &filters, Some(100), false)?;
        println!(
            "--where {:<34} {:>8} objects   --count {:>8}   --limit 100 {:>8}  ({plan:?} plan)",
            if filters.is_empty() {
                "(none)".to_string()
            } else {
                filters.join(" --where ")
            },
            matches,
            ms(count),
            ms(limit)
        );
    }
    let names = NamesOptions {
        db: path.clone(),
        bucket: None,
        prefix: None,
        format: Some(Format::Jsonl),
        table: Default::default(),
        tags: false,
        limit: None,
    };
    let t = Instant::now();
    s3meta::read::names::run(&names, &mut std::io::sink(), false)?;
    println!(
        "names (every name, counts and top values) {}",
        ms(t.elapsed())
    );

    let sel = Selection::new(
        &Scope::default(),
        &[Filter::parse("project=gemini")?],
        Plan::Index,
    );
    let (_, params) = sel.render();
    let mut stmt = conn.prepare(&format!(
        "EXPLAIN QUERY PLAN {}",
        query::records_sql(&sel, Some(100))
    ))?;
    println!("\nplan of `--where project=gemini --limit 100`:");
    let mut rows = stmt.query(params.as_slice())?;
    while let Some(r) = rows.next()? {
        println!("  {}", r.get::<_, String>(3)?);
    }
    Ok(())
}

/// The median of `RUNS` runs of the query, as the binary runs it (open, query, write).
fn time(
    path: &std::path::Path,
    filters: &[&str],
    limit: Option<u64>,
    count: bool,
) -> anyhow::Result<Duration> {
    let args = QueryOptions {
        db: path.into(),
        bucket: None,
        prefix: None,
        filters: filters.iter().map(|f| f.to_string()).collect(),
        sql: None,
        format: Some(Format::Jsonl),
        table: Default::default(),
        limit,
        count,
        include_gone: false,
        all_versions: false,
    };
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut out = Vec::new();
        let t = Instant::now();
        query::run(&args, &mut out, false)?;
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    Ok(times[RUNS / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
