//! Seeds: choosing them, sweeping them, reproducing a failure, and checking determinism.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::SeedError;

/// The environment variable that selects one seed (to reproduce a failure).
pub const SIM_SEED: &str = "SIM_SEED";
/// The environment variable that selects how many seeds a sweep runs.
pub const SIM_SEEDS: &str = "SIM_SEEDS";

/// The seeds a simulation test should run, from the environment:
///
/// * `SIM_SEED=<n>`: just seed `n` (it wins over `SIM_SEEDS`);
/// * `SIM_SEEDS=<k>`: seeds `0..k`;
/// * neither: seeds `0..default_count`.
///
/// Numbers are decimal or `0x`-prefixed hexadecimal. See [`parse_seeds`] for the same
/// without the environment.
///
/// # Panics
///
/// If a variable is set but is not a number: a sweep that silently ran the default seeds
/// instead of the one asked for would be worse than useless.
#[must_use]
pub fn seeds_from_env(default_count: usize) -> Vec<u64> {
    let seed = std::env::var(SIM_SEED).ok();
    let count = std::env::var(SIM_SEEDS).ok();
    match parse_seeds(seed.as_deref(), count.as_deref(), default_count) {
        Ok(seeds) => seeds,
        Err(e) => panic!("{e}"),
    }
}

/// [`seeds_from_env`]'s rules, given the values of `SIM_SEED` and `SIM_SEEDS`.
///
/// # Errors
///
/// [`SeedError::NotANumber`] if a given value is not a `u64`.
///
/// # Examples
///
/// ```
/// use testkit::parse_seeds;
///
/// assert_eq!(parse_seeds(Some("42"), Some("8"), 4)?, vec![42]);
/// assert_eq!(parse_seeds(None, Some("3"), 4)?, vec![0, 1, 2]);
/// assert_eq!(parse_seeds(None, None, 2)?, vec![0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_seeds(
    sim_seed: Option<&str>,
    sim_seeds: Option<&str>,
    default_count: usize,
) -> Result<Vec<u64>, SeedError> {
    if let Some(value) = sim_seed {
        return Ok(vec![parse_u64(SIM_SEED, value)?]);
    }
    let count = match sim_seeds {
        Some(value) => parse_u64(SIM_SEEDS, value)?,
        None => default_count as u64,
    };
    Ok((0..count).collect())
}

fn parse_u64(var: &'static str, value: &str) -> Result<u64, SeedError> {
    let trimmed = value.trim();
    let parsed = match trimmed.strip_prefix("0x").or_else(|| trimmed.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => trimmed.parse(),
    };
    parsed.map_err(|_| SeedError::NotANumber { var, value: value.to_owned() })
}

/// The command line that reruns one seed of one simulation test:
/// `SIM_SEED=<seed> cargo test -p <package> --test sim <test_name>`.
///
/// # Examples
///
/// ```
/// assert_eq!(
///     testkit::reproduce_line(7, "sim_partition_heals_to_single_lord", "legion-proto"),
///     "SIM_SEED=7 cargo test -p legion-proto --test sim sim_partition_heals_to_single_lord",
/// );
/// ```
#[must_use]
pub fn reproduce_line(seed: u64, test_name: &str, package: &str) -> String {
    format!("SIM_SEED={seed} cargo test -p {package} --test sim {test_name}")
}

/// Runs `run` once per seed, in order, and stops at the first failure with a panic that
/// names the seed and the [`reproduce_line`].
///
/// A failure is `run` returning `Err` (typically a [`SimError`](crate::SimError) turned into
/// text, plus whatever the test wants to add) or `run` panicking (an `assert!` in the test
/// or a panic in the code under test). Pass `env!("CARGO_PKG_NAME")` as `package` and the
/// test function's name as `test_name`.
///
/// # Panics
///
/// On the first failing seed, as described.
///
/// # Examples
///
/// ```should_panic
/// testkit::sweep("legion-proto", "sim_demo", &[1, 2, 3], |seed| {
///     if seed == 2 { Err("two lords".to_owned()) } else { Ok(()) }
/// });
/// // panics with:
/// // simulation failed for seed 2: two lords
/// // reproduce with: SIM_SEED=2 cargo test -p legion-proto --test sim sim_demo
/// ```
pub fn sweep(package: &str, test_name: &str, seeds: &[u64], mut run: impl FnMut(u64) -> Result<(), String>) {
    for &seed in seeds {
        let message = match catch_unwind(AssertUnwindSafe(|| run(seed))) {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(payload) => {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic payload)".to_owned());
                format!("panicked: {text}")
            }
        };
        panic!(
            "simulation failed for seed {seed}: {message}\nreproduce with: {}",
            reproduce_line(seed, test_name, package)
        );
    }
}

/// Runs `run(seed)` twice and checks that it returns the same text both times: the
/// determinism check (STYLE.md §3.7). `run` builds and drives a whole simulation and
/// returns its [`SimNet::transcript`](crate::SimNet::transcript) (or anything else that
/// should be reproducible).
///
/// A difference means the outcome depends on something other than the seed: `HashMap`
/// iteration order, a clock read in the code under test, unseeded randomness, or global
/// state carried from one run to the next.
///
/// # Errors
///
/// A message naming the seed and the first line that differs.
///
/// # Examples
///
/// ```
/// let same = testkit::check_determinism(5, |seed| format!("seed {seed}"));
/// assert!(same.is_ok());
/// let mut calls = 0;
/// let differs = testkit::check_determinism(5, |_| { calls += 1; format!("call {calls}") });
/// assert!(differs.unwrap_err().contains("line 1"));
/// ```
pub fn check_determinism(seed: u64, mut run: impl FnMut(u64) -> String) -> Result<(), String> {
    let first = run(seed);
    let second = run(seed);
    if first == second {
        return Ok(());
    }
    let mut a = first.lines();
    let mut b = second.lines();
    let mut line = 1;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            (x, y) => {
                return Err(format!(
                    "seed {seed} is not deterministic: the runs differ at line {line}:\n  first:  {}\n  second: {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_seed_wins_and_accepts_hex() {
        assert_eq!(parse_seeds(Some("0x10"), Some("5"), 3), Ok(vec![16]));
        assert_eq!(parse_seeds(Some(" 9 "), None, 3), Ok(vec![9]));
    }

    #[test]
    fn sim_seeds_is_a_count() {
        assert_eq!(parse_seeds(None, Some("0"), 3), Ok(vec![]));
        assert_eq!(parse_seeds(None, Some("4"), 3), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_seeds(None, None, 3), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn garbage_is_reported_with_the_variable_name() {
        let e = parse_seeds(Some("abc"), None, 3).unwrap_err();
        assert_eq!(e, SeedError::NotANumber { var: "SIM_SEED", value: "abc".into() });
        assert!(e.to_string().contains("SIM_SEED=\"abc\""));
        assert!(parse_seeds(None, Some("-1"), 3).is_err());
    }

    #[test]
    fn sweep_runs_every_seed_when_all_pass() {
        let mut seen = Vec::new();
        sweep("pkg", "sim_ok", &[3, 1, 2], |seed| {
            seen.push(seed);
            Ok(())
        });
        assert_eq!(seen, [3, 1, 2]);
    }

    fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
        payload.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn sweep_failure_names_the_seed_and_the_reproduce_line() {
        let mut seen = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            sweep("legion-proto", "sim_x", &[1, 2, 3], |seed| {
                seen.push(seed);
                if seed == 2 { Err("boom".into()) } else { Ok(()) }
            });
        }));
        let text = panic_text(result.unwrap_err());
        assert_eq!(
            text,
            "simulation failed for seed 2: boom\nreproduce with: SIM_SEED=2 cargo test -p legion-proto --test sim sim_x"
        );
        assert_eq!(seen, [1, 2], "the sweep stops at the first failure");
    }

    #[test]
    fn sweep_catches_a_panic_in_the_run() {
        let result = catch_unwind(|| {
            sweep("pkg", "sim_panics", &[7], |_| panic!("assertion failed: lords <= 1"));
        });
        let text = panic_text(result.unwrap_err());
        assert!(
            text.starts_with("simulation failed for seed 7: panicked: assertion failed: lords <= 1"),
            "{text}"
        );
        assert!(text.ends_with("SIM_SEED=7 cargo test -p pkg --test sim sim_panics"), "{text}");
    }

    #[test]
    fn determinism_check_reports_the_first_difference() {
        let mut n = 0;
        let err = check_determinism(1, |_| {
            n += 1;
            if n == 1 { "a\nb\nc".to_owned() } else { "a\nb".to_owned() }
        })
        .unwrap_err();
        assert_eq!(
            err,
            "seed 1 is not deterministic: the runs differ at line 3:\n  first:  c\n  second: <end>"
        );
    }
}
