use super::*;

/// Seeds `cargo test` plays; `scripts/soak` plays as many as asked.
const SEEDS: u64 = 300;

#[test]
fn seeded_hostile_transfers_keep_every_invariant() {
    // The soak's own limits, so `scripts/soak --seed N` replays seed N.
    let limits = Limits::default();
    let results = play_all(0..SEEDS, &limits);
    let failed = failures(&results);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let mut total = Outcome::default();
    for out in results.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        total.crashes += out.crashes;
        total.acked_checked += out.acked_checked;
        total.lost += out.lost;
    }
    // The seeds did what they are for.
    assert!(total.crashes > 10, "{total:?}");
    assert!(total.acked_checked > 0, "{total:?}");
    assert!(total.lost > 0, "{total:?}");
    assert!(crate::crypto::seal_watch::seals() > 0);
}

/// A bounded sample of the soak, for CI: `PIGEON_SIM_SAMPLE` seeds (200
/// by default) from `PIGEON_SIM_FROM`, or, without it, from a start that
/// moves on every day, so that each day's runs try seeds no run tried
/// before. `cargo test -p pigeon-core --lib sim::tests::soak_sample --
/// --ignored --nocapture`; a failing seed prints its replay command.
#[test]
#[ignore = "a sample of the soak, run by .ci/run"]
fn soak_sample() {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let count = var("PIGEON_SIM_SAMPLE").unwrap_or(200);
    let from = var("PIGEON_SIM_FROM").unwrap_or_else(|| {
        let days = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        // Past the seeds `cargo test` plays and the 10,000 of the README's soak.
        20_000 + (days % 10_000) * count
    });
    eprintln!("soak sample: seeds {from}..{}", from + count);
    let failed = failures(&play_all(from..from + count, &Limits::default()));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Play `seeds` side by side, one scenario per core at a time (each is
/// single-threaded on its own paused clock, so they do not disturb each
/// other), in seed order.
fn play_all(
    seeds: impl IntoIterator<Item = u64>,
    limits: &Limits,
) -> Vec<(Scenario, Result<Outcome, Failure>)> {
    let seeds: Vec<u64> = seeds.into_iter().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let scenario = Scenario::from_seed(seed, limits);
                    let result = run(&scenario);
                    crate::task::lock(&results).push((scenario, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(s, _)| s.seed);
    results
}

/// The failures among `results`, each with its scenario.
///
/// A seed that only missed its time bound is played once more, alone: the
/// simulator still runs over the real disk and sled (issue 27), so on a
/// loaded machine a flush that takes long in real time can let the paused
/// clock jump to a timer, and a transfer end late that ends in time alone
/// (seed 1000227: 201 s once in CI, 60–66 s in six runs alone). It counts
/// if it misses again; it is said either way. Every other invariant
/// counts the first time.
fn failures(results: &[(Scenario, Result<Outcome, Failure>)]) -> Vec<String> {
    results
        .iter()
        .filter_map(|(s, r)| {
            let f = r.as_ref().err()?;
            let timing = f.what.starts_with("finished ") || f.what.starts_with("not complete");
            if timing {
                if let Ok(out) = run(s) {
                    eprintln!(
                        "seed {}: {} beside other seeds; alone it ended {} s after the calm (bound {} s)",
                        s.seed,
                        f.what,
                        out.after_calm.as_secs(),
                        out.calm_bound.as_secs()
                    );
                    return None;
                }
            }
            Some(format!("{f}\n  {s:?}"))
        })
        .collect()
}

/// Multi-link seeds `cargo test` plays (issue 28): one to three channels,
/// outages among them.
const MULTI_SEEDS: u64 = 500;

/// Multi-link seeds beyond the ones `cargo test` plays that still fail:
/// 11 of the 2,500 from 1,000,500 (`PIGEON_SIM_FROM=1000500
/// PIGEON_SIM_SAMPLE=2500`, the soak sample). Most finish a little past
/// the bound (208 s for 180 s) after a link gone for good beside crashes;
/// a few much later, or not at all. The test below skips them should the
/// seeds it plays grow; `open_multi_link_seeds` plays them.
const MULTI_OPEN: &[u64] = &[
    1_000_509, 1_000_760, 1_001_045, 1_001_165, 1_001_393, 1_001_468, 1_002_172, 1_002_227,
    1_002_232, 1_002_467, 1_002_487,
];

#[test]
fn seeded_transfers_over_several_links_keep_every_invariant() {
    let limits = Limits::default();
    let seeds = MULTI_LINK_SEEDS..MULTI_LINK_SEEDS + MULTI_SEEDS;
    let results: Vec<_> = play_all(seeds, &limits)
        .into_iter()
        .filter(|(s, _)| !MULTI_OPEN.contains(&s.seed))
        .collect();
    let failed = failures(&results);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The seeds drew what they are for: several links, and each kind of
    // outage, some for good.
    let scenarios: Vec<&Scenario> = results.iter().map(|(s, _)| s).collect();
    let outages: Vec<Outage> = scenarios
        .iter()
        .flat_map(|s| s.links.iter().filter_map(|l| l.outage))
        .collect();
    assert!(scenarios.iter().all(|s| s.links.len() >= 2));
    assert!(scenarios.iter().any(|s| s.links.len() == 3));
    for kind in [
        OutageKind::FailingSends,
        OutageKind::Blackhole(Party::Client),
        OutageKind::Blackhole(Party::Agent),
    ] {
        assert!(outages.iter().any(|o| o.kind == kind), "no {kind:?}");
    }
    assert!(outages.iter().any(|o| o.until.is_none()));
}

/// `cargo test -p pigeon-core --lib sim::tests::open_multi_link_seeds -- --ignored`
#[test]
#[ignore = "multi-link seeds still failing (issue 28)"]
fn open_multi_link_seeds() {
    let failed = failures(&play_all(MULTI_OPEN.iter().copied(), &Limits::default()));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn seeds_before_the_multi_link_ones_draw_one_link_as_they_always_did() {
    let limits = Limits::default();
    for seed in [0, 1, 185, 999_999] {
        let s = Scenario::from_seed(seed, &limits);
        assert_eq!(s.links.len(), 1, "seed {seed}");
        assert!(s.links[0].outage.is_none());
        assert_eq!(s.links[0].profile, s.profile);
    }
}

/// Seeds beyond the first [`SEEDS`] that once failed, each for a bug since
/// fixed (the commit that fixed it names the seed).
const FOUND: &[u64] = &[
    468, 481, 745, 6271, 6482, 7563, 7754,
    // Several links (issue 28): asks and probes that kept going to a link
    // that swallowed them or was gone, beside one that worked.
    1_000_073, 1_000_108, 1_000_156, 1_000_249, 1_000_318, 1_000_375, 1_000_376, 1_000_467,
];

#[test]
fn seeds_that_found_bugs_stay_fixed() {
    let failed = failures(&play_all(FOUND.iter().copied(), &Limits::default()));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// `PIGEON_SIM_SEED=N cargo test -p pigeon-core --lib sim::tests::one_seed -- --ignored --nocapture`
#[test]
#[ignore = "replays the seed in PIGEON_SIM_SEED"]
fn one_seed() {
    let seed: u64 = std::env::var("PIGEON_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("PIGEON_SIM_SEED=N names the seed to replay");
    trace_if_asked();
    let scenario = Scenario::from_seed(seed, &Limits::default());
    eprintln!("{scenario:?}");
    let t = std::time::Instant::now();
    let out = run(&scenario);
    eprintln!("{out:?} in {:?}", t.elapsed());
    assert!(out.is_ok());
}

/// With `PIGEON_SIM_TRACE` set, the engine's debug log on stderr, stamped
/// with the simulated clock.
fn trace_if_asked() {
    if std::env::var_os("PIGEON_SIM_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pigeon_core=debug")
            .with_ansi(false)
            .with_timer(Simulated)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Log lines stamped with the simulated clock (seconds since the first).
struct Simulated;

impl tracing_subscriber::fmt::time::FormatTime for Simulated {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(tokio::time::Instant::now);
        write!(w, "{:>9.3}", start.elapsed().as_secs_f64())
    }
}

/// Issue 28 item 4: after an outage the sender sends again what the
/// receiver lacks, not its window. Two like links; for 34 s the first
/// swallows everything sent to the client (the agent's acknowledgements
/// go on it: the session came by it), while every chunk still arrives.
/// Nothing was lost, so almost nothing may go twice: a probe a timeout
/// while no answer comes, not every chunk whose timer ran out.
#[test]
fn an_outage_of_the_way_back_costs_probes_not_a_resent_window() {
    let quiet = crate::transport::Faults::default();
    let link = |outage| Channel {
        profile: crate::transport::Profile::TelegramDoc,
        faults: quiet.clone(),
        outage,
    };
    let scenario = Scenario {
        seed: 28_004,
        size: 12_000_000,
        kind: scenario::Content::Random,
        profile: crate::transport::Profile::TelegramDoc,
        faults: quiet.clone(),
        download: false,
        crashes: vec![],
        partition: None,
        stranger: false,
        nudges: vec![],
        links: vec![
            link(Some(Outage {
                kind: OutageKind::Blackhole(Party::Client),
                from: Duration::from_secs(5),
                until: Some(Duration::from_secs(39)),
            })),
            link(None),
        ],
    };
    trace_if_asked();
    let out = run(&scenario).unwrap_or_else(|f| panic!("{f}"));
    eprintln!("{out:?}");
    assert!(
        out.resent <= 4,
        "{} chunks sent again though none was lost: {out:?}",
        out.resent
    );
}
