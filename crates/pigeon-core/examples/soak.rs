//! The simulator's soak: many seeds, one table (`scripts/soak`).
//!
//! ```text
//! cargo run --release -p pigeon-core --features sim --example soak -- --seeds 10000
//! cargo run --release -p pigeon-core --features sim --example soak -- --seed 185
//! ```

use std::time::{Duration, Instant};

use pigeon_core::sim::{self, Limits, Outcome, Scenario};

struct Args {
    from: u64,
    seeds: u64,
    one: Option<u64>,
    jobs: usize,
    limits: Limits,
}

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}\nusage: soak [--seeds N] [--from S] [--seed S] [--max-size SIZE] [--jobs J]");
            std::process::exit(2);
        }
    };
    let seeds: Vec<u64> = match args.one {
        Some(s) => vec![s],
        None => (args.from..args.from + args.seeds).collect(),
    };
    let started = Instant::now();
    let mut total = Outcome::default();
    let mut after_calm: Vec<f64> = vec![];
    let mut failures = vec![];
    for batch in seeds.chunks(args.jobs.max(1)) {
        let results: Vec<(Scenario, Result<Outcome, sim::Failure>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&seed| {
                    let limits = args.limits;
                    s.spawn(move || {
                        let scenario = Scenario::from_seed(seed, &limits);
                        let out = sim::run(&scenario);
                        (scenario, out)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (scenario, result) in results {
            match result {
                Ok(o) => {
                    add(&mut total, &o);
                    if o.calm_bound > Duration::ZERO {
                        after_calm.push(o.after_calm.as_secs_f64() / o.calm_bound.as_secs_f64());
                    }
                    if args.one.is_some() {
                        println!("{scenario:?}\n{o:?}");
                    }
                }
                Err(f) => {
                    eprintln!("FAILED {f}\n  {scenario:?}");
                    failures.push(f.seed);
                }
            }
        }
        pigeon_core::crypto::seal_watch::clear();
    }
    after_calm.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        after_calm
            .get(((after_calm.len() as f64 - 1.0) * p).round() as usize)
            .map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0))
    };
    println!("seeds          {}", seeds.len());
    println!("transfers      {}", total.transfers);
    println!("bytes          {}", total.bytes);
    println!("messages sent  {}", total.sent);
    println!(
        "faults         lost {} · duplicated {} · reordered {} · corrupted {} · cut by partitions {}",
        total.lost, total.duplicated, total.reordered, total.corrupted, total.cut
    );
    println!("crashes        {}", total.crashes);
    println!(
        "acked checked  {} chunks acknowledged before an agent crash, found in its store after",
        total.acked_checked
    );
    println!(
        "retries        {} failed transfers run again",
        total.retries
    );
    println!(
        "simulated      {:.1} h",
        total.simulated.as_secs_f64() / 3600.0
    );
    println!(
        "after calm     p50 {} · p99 {} of the bound",
        pct(0.5),
        pct(0.99)
    );
    println!("real time      {:.1} s", started.elapsed().as_secs_f64());
    println!("failures       {}", failures.len());
    if !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(u64::to_string).collect();
        println!("failed seeds   {}", list.join(" "));
        std::process::exit(1);
    }
}

fn add(total: &mut Outcome, o: &Outcome) {
    total.transfers += o.transfers;
    total.bytes += o.bytes;
    total.crashes += o.crashes;
    total.retries += o.retries;
    total.acked_checked += o.acked_checked;
    total.sent += o.sent;
    total.lost += o.lost;
    total.duplicated += o.duplicated;
    total.reordered += o.reordered;
    total.corrupted += o.corrupted;
    total.cut += o.cut;
    total.simulated += o.simulated;
}

fn parse(raw: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        from: 0,
        seeds: 1000,
        one: None,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        limits: Limits::default(),
    };
    let mut it = raw.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = number(value()?)?,
            "--from" => args.from = number(value()?)?,
            "--seed" => args.one = Some(number(value()?)?),
            "--jobs" => args.jobs = number(value()?)? as usize,
            "--max-size" => args.limits.max_size = size(&value()?)?,
            "--max-crashes" => args.limits.max_crashes = number(value()?)? as u32,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

/// `256k`, `10M`, `1G` or bytes.
fn size(v: &str) -> Result<u64, String> {
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{v:?} is not a size"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("{v:?}: unknown unit (k, M, G)")),
    };
    Ok(n * mult)
}
