//! The default worker-thread count.
//!
//! Phones mix core types: a big.LITTLE or tri-cluster SoC (e.g. 1 prime + 3 performance + 4
//! efficiency cores) has in-order LITTLE cores that run owlet's matrix products at a third of
//! a big core's speed or less. Every product is split into equal parts per thread, so a thread
//! on a LITTLE core holds the whole step back, and its memory traffic competes with the big
//! cores'. So on aarch64 Linux/Android the default uses the **performance cores** only; every
//! other system uses all the CPUs the process may run on. `-t` / `SessionOptions::threads` /
//! the C ABI's `threads` override it.

use std::path::Path;

/// The default number of worker threads: on aarch64 Linux/Android the performance cores
/// ([`performance_cores`] over `/sys/devices/system/cpu`), at most the CPUs this process may
/// run on; elsewhere, or when sysfs says nothing usable, those CPUs
/// ([`std::thread::available_parallelism`]). Always at least 1.
pub fn default_threads() -> usize {
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    #[cfg(all(
        target_arch = "aarch64",
        any(target_os = "linux", target_os = "android")
    ))]
    if let Some(big) = performance_cores(Path::new("/sys/devices/system/cpu")) {
        return big.clamp(1, all);
    }
    all
}

/// The number of performance cores described by a sysfs CPU directory (`dir/cpuN/...`), or
/// `None` when it describes none usably (no `cpuN` entries, or neither file below readable for
/// every one of them).
///
/// - From `cpuN/cpu_capacity` (the scheduler's per-CPU capacity, the fastest CPU at 1024): the
///   CPUs with at least **half** the largest capacity. Device trees give LITTLE in-order cores
///   (Cortex-A53/A55/A510/A520) about 0.25–0.4 of the prime core's capacity (e.g. RK3399's
///   A53s 0.37, Snapdragon 865's A55s 0.28), and mid cores 0.6–0.9 (Snapdragon 865's gold A77s
///   0.85), so the cut at one half keeps prime and mid cores and drops the LITTLE ones.
/// - Else from `cpuN/cpufreq/cpuinfo_max_freq`: the CPUs with at least **four fifths** of the
///   highest maximum frequency. Frequency ignores how much a core does per cycle, so the cut
///   is stricter: LITTLE clusters top out at about 0.6–0.78 of the big cores' frequency
///   (1.8 of 2.84 GHz, 1.4 of 1.8 GHz), mid clusters at 0.85 or more (2.42 of 2.84 GHz).
///
/// On a system whose cores are all alike this is every CPU.
pub fn performance_cores(dir: &Path) -> Option<usize> {
    let cpus: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    if cpus.is_empty() {
        return None;
    }
    let read_all = |file: &str| -> Option<Vec<u64>> {
        cpus.iter()
            .map(|c| {
                std::fs::read_to_string(c.join(file))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect()
    };
    // (values, numerator, denominator): count the CPUs with value ≥ max · num / den.
    let (values, num, den) = match read_all("cpu_capacity") {
        Some(v) => (v, 1, 2),
        None => (read_all("cpufreq/cpuinfo_max_freq")?, 4, 5),
    };
    let max = *values.iter().max()?;
    if max == 0 {
        return None;
    }
    Some(
        values
            .iter()
            .filter(|&&v| v as u128 * den >= max as u128 * num)
            .count(),
    )
}

/// The tests' scratch folders, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/scratch.rs"]
mod test_scratch;

#[cfg(test)]
mod tests {
    use super::*;

    use test_scratch::TempDir;

    /// A fake `/sys/devices/system/cpu` under the temp directory: one `cpuN` per entry, with
    /// `cpu_capacity` and/or `cpufreq/cpuinfo_max_freq` where given, plus the files real sysfs
    /// has next to them (`online`, `cpufreq/`, `cpuidle/`), which must be ignored.
    /// The folder is deleted when dropped (tests use it as a temporary, so it lives until the
    /// end of the statement that reads it).
    fn tree(name: &str, cpus: &[(Option<&str>, Option<&str>)]) -> TempDir {
        let dir = TempDir::new(std::env::temp_dir(), "owlet-sysfs", name);
        std::fs::create_dir_all(dir.join("cpufreq")).unwrap();
        std::fs::create_dir_all(dir.join("cpuidle")).unwrap();
        std::fs::write(dir.join("online"), format!("0-{}\n", cpus.len().max(1) - 1)).unwrap();
        for (i, (cap, freq)) in cpus.iter().enumerate() {
            let c = dir.join(format!("cpu{i}"));
            std::fs::create_dir_all(c.join("cpufreq")).unwrap();
            if let Some(cap) = cap {
                std::fs::write(c.join("cpu_capacity"), format!("{cap}\n")).unwrap();
            }
            if let Some(f) = freq {
                std::fs::write(c.join("cpufreq/cpuinfo_max_freq"), format!("{f}\n")).unwrap();
            }
        }
        dir
    }

    #[test]
    fn big_little_four_plus_four() {
        let mut cpus = vec![(Some("381"), Some("1785600")); 4];
        cpus.extend([(Some("1024"), Some("2841600")); 4]);
        assert_eq!(performance_cores(&tree("4p4", &cpus)), Some(4));
    }

    #[test]
    fn tri_cluster_one_three_four_keeps_prime_and_mid() {
        let mut cpus = vec![(Some("284"), Some("1804800")); 4];
        cpus.extend([(Some("871"), Some("2419200")); 3]);
        cpus.push((Some("1024"), Some("2841600")));
        assert_eq!(performance_cores(&tree("1p3p4", &cpus)), Some(4));
        // The same SoC without capacities: the frequencies give the same answer.
        let freq_only: Vec<_> = cpus.iter().map(|&(_, f)| (None, f)).collect();
        assert_eq!(performance_cores(&tree("1p3p4f", &freq_only)), Some(4));
    }

    #[test]
    fn all_equal_cores_count_all() {
        let cpus = vec![(Some("1024"), Some("2400000")); 4];
        assert_eq!(performance_cores(&tree("eq", &cpus)), Some(4));
        let freq_only = vec![(None, Some("1800000")); 6];
        assert_eq!(performance_cores(&tree("eqf", &freq_only)), Some(6));
    }

    #[test]
    fn frequency_fallback_when_a_capacity_is_missing() {
        // cpu_capacity missing on one CPU: the capacities are not used at all.
        let mut cpus = vec![(Some("1024"), Some("1400000")); 4];
        cpus.extend([(Some("1024"), Some("1800000")), (None, Some("1800000"))]);
        assert_eq!(performance_cores(&tree("mixed", &cpus)), Some(2));
    }

    #[test]
    fn missing_or_unreadable_files_give_none() {
        assert_eq!(performance_cores(&tree("none", &[(None, None); 4])), None);
        assert_eq!(performance_cores(&tree("empty", &[])), None);
        assert_eq!(
            performance_cores(&tree("garbage", &[(Some("fast"), None); 2])),
            None
        );
        assert_eq!(
            performance_cores(&tree("zero", &[(Some("0"), None); 2])),
            None
        );
        assert_eq!(
            performance_cores(Path::new("/nonexistent/owlet/sysfs")),
            None
        );
        // One CPU lacks both files: neither source describes every CPU.
        let cpus = [(Some("1024"), Some("1")), (None, None)];
        assert_eq!(performance_cores(&tree("partial", &cpus)), None);
    }

    #[test]
    fn default_is_at_least_one_and_at_most_the_cpus() {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = default_threads();
        assert!((1..=all).contains(&t), "{t} of {all}");
    }
}
