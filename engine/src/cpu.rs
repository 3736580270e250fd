//! How many threads llama.cpp may use right now, decided from what the rest of the machine does.
//!
//! Two decode threads whose OpenMP workers spin between operations are 1.4× faster than one on
//! an idle 2-core machine, and six times slower when another process keeps a core busy: a
//! spinning worker that loses its core stalls every barrier of the graph (docs/benchmarks.md).
//! So with the default thread settings the engine thread looks, before a llama.cpp call and at
//! most every [`RECHECK`], at how much CPU other processes used on our cores since its last
//! look (the kernel's per-CPU counters less our own CPU time), and runs the call with all its
//! threads only when they would have their cores to themselves; otherwise on one thread. The
//! first look after an idle gap averages over the gap; when that finds the cores busy, it looks
//! again over [`CONFIRM`] (the load may have ended before the job came: a build that finished,
//! a benchmark's other server), so that a job's first prompt chunk does not run on one thread
//! for a load that is gone.
//!
//! Linux only (it reads `/proc`); elsewhere, or when the OpenMP runtime cannot be switched,
//! llama.cpp keeps the thread counts it was given.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::EngineCounters;

/// How often the load is looked at while llama.cpp calls follow one another.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// A look more than this after the last one averages over a gap in which the engine was idle:
/// it says what the machine did then (a build, another program's burst), not what it does now.
pub(crate) const STALE: Duration = Duration::from_secs(1);

/// How long a stale look that found the cores busy watches again before it takes the threads
/// away (5 clock ticks per core).
pub(crate) const CONFIRM: Duration = Duration::from_millis(50);

/// Cores' worth of CPU that other processes may use on the cores we would take while we still
/// run all threads (an editor redrawing as the user types uses a little).
pub(crate) const SLACK: f64 = 0.3;

/// Whether a call may use all `threads` of `n_cpus` cores while other processes used `others`
/// cores on average over the last look.
pub(crate) fn all_threads_fit(n_cpus: u32, threads: u32, others: f64) -> bool {
    others <= f64::from(n_cpus.saturating_sub(threads)) + SLACK
}

/// CPU time counters at one moment, in clock ticks (`USER_HZ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Busy time (everything but idle and iowait, steal included) of the cores we may run on.
    pub(crate) busy: u64,
    /// This process's user and system time, all its threads.
    pub(crate) ours: u64,
}

/// Cores' worth of CPU that other processes (and the hypervisor, through steal time) used
/// between two samples `secs` apart. Ticks are `USER_HZ` (100 per second on Linux).
pub(crate) fn others_cores(before: Sample, after: Sample, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    let ours = after.ours.saturating_sub(before.ours);
    busy.saturating_sub(ours) as f64 / (TICKS_PER_SEC * secs)
}

const TICKS_PER_SEC: f64 = 100.0;

/// The busy ticks of the listed CPUs in `/proc/stat` text (`cpuN user nice system idle iowait
/// irq softirq steal …`); `None` when no listed CPU is found.
pub(crate) fn parse_proc_stat(text: &str, cpus: &[usize]) -> Option<u64> {
    let mut total = 0u64;
    let mut found = false;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(n) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.is_empty() && !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = fields.take(8).map_while(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        // user nice system [idle iowait] irq softirq steal
        total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        found = true;
    }
    found.then_some(total)
}

/// User plus system ticks from `/proc/self/stat` text. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_self_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state (3) … utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The cores this thread may run on (empty: unknown, count them all).
fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `set` is a plain bit set the kernel fills in; its size is passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return (0..libc::CPU_SETSIZE as usize)
                .filter(|&i| libc::CPU_ISSET(i, &set))
                .collect();
        }
    }
    Vec::new()
}

/// Where the load is read: the allowed cores' counters, or, under a CPU quota (a container
/// started with `--cpus=2` on a large host, where the affinity still lists every host core),
/// the quota's own cgroup: its usage counts what the quota counts, and our share of it is
/// measured against the quota's cores, not the host's.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    Cpus(Vec<usize>),
    Cgroup(std::path::PathBuf),
}

/// The cgroup (v2) directory of this process from `/proc/self/cgroup` text (`0::/path`).
pub(crate) fn parse_self_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Cores a cgroup's `cpu.max` (`QUOTA PERIOD`, or `max PERIOD` without a quota) allows.
pub(crate) fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_ascii_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// A cgroup's CPU time from its `cpu.stat` (`usage_usec N`), in ticks.
pub(crate) fn parse_cpu_stat(text: &str) -> Option<u64> {
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec / (1_000_000 / TICKS_PER_SEC as u64))
}

/// The innermost cgroup above this process that sets a CPU quota, and its cores.
fn quota_cgroup() -> Option<(std::path::PathBuf, f64)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut dir = std::path::Path::new("/sys/fs/cgroup")
        .join(parse_self_cgroup(&own)?.trim_start_matches('/'));
    loop {
        if let Some(cores) = std::fs::read_to_string(dir.join("cpu.max"))
            .ok()
            .and_then(|t| parse_cpu_max(&t))
        {
            return dir.join("cpu.stat").is_file().then_some((dir, cores));
        }
        if dir == std::path::Path::new("/sys/fs/cgroup") || !dir.pop() {
            return None;
        }
    }
}

/// Where to read the load, and the cores it is counted against (`n_cpus` unless a quota is
/// smaller).
fn source(n_cpus: u32) -> (Source, u32) {
    match quota_cgroup() {
        Some((dir, cores)) if cores < allowed_cpus().len().max(1) as f64 => {
            (Source::Cgroup(dir), n_cpus.min(cores.ceil() as u32).max(1))
        }
        _ => (Source::Cpus(allowed_cpus()), n_cpus),
    }
}

fn read_sample(source: &Source) -> Option<Sample> {
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let busy = match source {
        Source::Cpus(cpus) => parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?, cpus)?,
        Source::Cgroup(dir) => {
            parse_cpu_stat(&std::fs::read_to_string(dir.join("cpu.stat")).ok()?)?
        }
    };
    Some(Sample {
        busy,
        ours: parse_self_stat(&own)?,
    })
}

/// The engine thread's thread policy: installed by [`install`] when the configuration left
/// the thread counts to the engine.
struct Policy {
    source: Source,
    n_cpus: u32,
    threads: u32,
    /// The last look at the counters.
    last: (Instant, Sample),
    all_threads: bool,
    counters: Arc<EngineCounters>,
}

impl Policy {
    /// Looks at the load again if [`RECHECK`] has passed, and switches the threads if the
    /// answer changed.
    fn look(&mut self) {
        let (n_cpus, threads, source) = (self.n_cpus, self.threads, &self.source);
        let Some((fit, others)) = decide(
            &mut self.last,
            |others| all_threads_fit(n_cpus, threads, others),
            Instant::now(),
            || read_sample(source),
            |d| {
                std::thread::sleep(d);
                Instant::now()
            },
        ) else {
            return;
        };
        if fit != self.all_threads {
            tracing::debug!(
                others = format!("{others:.2}"),
                threads = if fit { self.threads } else { 1 },
                "other processes' load changed: llama.cpp threads switched"
            );
            crate::llama::limit_threads(!fit);
            self.all_threads = fit;
        }
    }
}

/// The decision of a look, apart from where the samples come from and how time passes (so
/// that it can be tested): whether all threads fit now, and the other processes' load that
/// says so; `None` when the last look is less than [`RECHECK`] old or the counters cannot be
/// read. A look after an idle gap ([`STALE`]) that finds the cores busy looks again over
/// [`CONFIRM`] (`wait` waits that long and says when it is then) and goes by that.
fn decide(
    last: &mut (Instant, Sample),
    fits: impl Fn(f64) -> bool,
    now: Instant,
    mut sample: impl FnMut() -> Option<Sample>,
    wait: impl FnOnce(Duration) -> Instant,
) -> Option<(bool, f64)> {
    let (at, before) = *last;
    let gap = now.checked_duration_since(at)?;
    if gap < RECHECK {
        return None;
    }
    let now_sample = sample()?;
    *last = (now, now_sample);
    let mut others = others_cores(before, now_sample, gap.as_secs_f64());
    if gap > STALE && !fits(others) {
        let then = wait(CONFIRM);
        if let Some(then_sample) = sample() {
            let secs = then.saturating_duration_since(now).as_secs_f64();
            others = others_cores(now_sample, then_sample, secs);
            *last = (then, then_sample);
        }
    }
    Some((fits(others), others))
}

thread_local! {
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

/// Makes the calling thread (the engine thread) choose, before each llama.cpp call, between
/// `threads` threads and one. Returns false, and installs nothing, where that cannot be done:
/// not Linux, `/proc` unreadable, or an OpenMP runtime that cannot be switched.
pub(crate) fn install(n_cpus: u32, threads: u32, counters: Arc<EngineCounters>) -> bool {
    if threads < 2 || !crate::llama::can_limit_threads() {
        return false;
    }
    let (source, n_cpus) = source(n_cpus);
    let Some(first) = read_sample(&source) else {
        return false;
    };
    POLICY.with_borrow_mut(|p| {
        *p = Some(Policy {
            source,
            n_cpus,
            threads,
            last: (Instant::now(), first),
            all_threads: true,
            counters,
        })
    });
    crate::llama::limit_threads(false);
    true
}

/// Called by the engine thread before every llama.cpp call that computes a graph.
pub(crate) fn before_call() {
    POLICY.with_borrow_mut(|p| {
        let Some(p) = p.as_mut() else { return };
        p.look();
        let counter = if p.all_threads {
            &p.counters.n_calls_all_threads
        } else {
            &p.counters.n_calls_one_thread
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
}

/// The thread counts (decode, batch) of the engine's contexts for the configured ones (0: ours
/// to choose). With both left to us, llama.cpp runs on all [`adaptive_threads`] only while
/// other processes leave those cores free, and on one thread otherwise ([`install`]).
pub(crate) fn thread_counts(
    n_threads: u32,
    n_threads_batch: u32,
    counters: Arc<EngineCounters>,
) -> (u32, u32) {
    if n_threads == 0 && n_threads_batch == 0 && install(n_cores(), adaptive_threads(), counters) {
        return (adaptive_threads(), adaptive_threads());
    }
    let decode = match n_threads {
        0 => default_decode_threads(),
        n => n,
    };
    let batch = match n_threads_batch {
        0 => n_cores(),
        n => n,
    };
    (decode, batch)
}

fn n_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Decode threads when the configuration says 0 and the thread count cannot follow the load:
/// one fewer than the cores, so that a busy neighbour does not stall decoding (measured in
/// docs/benchmarks.md).
fn default_decode_threads() -> u32 {
    n_cores().saturating_sub(1).max(1)
}

/// Threads for every call when the count follows the load ([`install`]): all cores on a machine
/// of two, one fewer on larger ones (the editor and the rest of the desktop keep one).
fn adaptive_threads() -> u32 {
    match n_cores() {
        n @ 0..=2 => n.max(1),
        n => n - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  7541873 601 635142 4729379 35136 0 3867 21949 0 0
cpu0 3770000 300 317000 2364000 17000 0 1900 11000 0 0
cpu1 3771873 301 318142 2365379 18136 0 1967 10949 0 0
intr 123 4 5
ctxt 99
";

    #[test]
    fn busy_ticks_count_user_system_irq_and_steal_of_the_allowed_cpus() {
        let cpu0 = 3_770_000 + 300 + 317_000 + 1_900 + 11_000;
        let cpu1 = 3_771_873 + 301 + 318_142 + 1_967 + 10_949;
        assert_eq!(parse_proc_stat(STAT, &[0]), Some(cpu0));
        assert_eq!(parse_proc_stat(STAT, &[1]), Some(cpu1));
        assert_eq!(parse_proc_stat(STAT, &[0, 1]), Some(cpu0 + cpu1));
        // Unknown affinity: every core (the aggregate `cpu` line is not counted twice).
        assert_eq!(parse_proc_stat(STAT, &[]), Some(cpu0 + cpu1));
        assert_eq!(parse_proc_stat(STAT, &[7]), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n", &[0]), None);
    }

    #[test]
    fn own_time_is_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (amd (lsp) x) S 1 4242 4242 0 -1 4194304 2000 0 0 0 157 31 0 0 20 0 9 0";
        assert_eq!(parse_self_stat(stat), Some(157 + 31));
        assert_eq!(parse_self_stat("4242 (amd-lsp) S 1 2"), None);
        assert_eq!(parse_self_stat("no name here"), None);
    }

    #[test]
    fn others_load_is_the_busy_time_we_did_not_spend() {
        let a = Sample {
            busy: 1000,
            ours: 400,
        };
        // 0.5 s: 2 cores' worth would be 100 ticks; we used 45, the cores were busy 95.
        let b = Sample {
            busy: 1095,
            ours: 445,
        };
        assert!((others_cores(a, b, 0.5) - 1.0).abs() < 1e-9);
        // Our ticks can run ahead of the cores' (different sampling): never negative.
        let c = Sample {
            busy: 1010,
            ours: 460,
        };
        assert_eq!(others_cores(a, c, 0.5), 0.0);
        assert_eq!(others_cores(a, b, 0.0), 0.0);
    }

    #[test]
    fn all_threads_run_only_while_their_cores_are_free() {
        // 2 cores, 2 threads: a busy neighbour (measured 0.67–1.0 cores) means one thread.
        assert!(all_threads_fit(2, 2, 0.0));
        assert!(all_threads_fit(2, 2, 0.25));
        assert!(!all_threads_fit(2, 2, 0.67));
        assert!(!all_threads_fit(2, 2, 1.0));
        // 8 cores, 7 threads: one core's worth of others still fits.
        assert!(all_threads_fit(8, 7, 1.2));
        assert!(!all_threads_fit(8, 7, 1.5));
    }

    #[test]
    fn a_look_after_an_idle_gap_goes_by_the_load_of_now() {
        let fits = |others: f64| all_threads_fit(2, 2, others);
        let t0 = Instant::now();
        let idle = Sample { busy: 0, ours: 0 };
        // 4 s idle on our side, during which another process kept a core busy for 3.6 s.
        let after_gap = Sample { busy: 360, ours: 0 };
        // The 50 ms after: the cores idle (the other process is done), or one still busy.
        for (then_busy, want_all) in [(0, true), (5, false)] {
            let mut last = (t0, idle);
            let mut samples = vec![
                Sample {
                    busy: 360 + then_busy,
                    ours: 0,
                },
                after_gap,
            ];
            let now = t0 + Duration::from_secs(4);
            let mut waited = None;
            let got = decide(
                &mut last,
                fits,
                now,
                || samples.pop(),
                |d| {
                    waited = Some(d);
                    now + d
                },
            );
            assert_eq!(waited, Some(CONFIRM));
            assert_eq!(
                got.map(|g| g.0),
                Some(want_all),
                "busy ticks after: {then_busy}"
            );
            assert_eq!(last.0, now + CONFIRM);
        }
        // The same load within a job (looks 100 ms apart) takes the threads away at once.
        let mut last = (t0, idle);
        let now = t0 + RECHECK;
        let busy = Sample { busy: 9, ours: 0 };
        let got = decide(
            &mut last,
            fits,
            now,
            || Some(busy),
            |_| unreachable!("no second look"),
        );
        assert_eq!(got.map(|g| g.0), Some(false));
        // An idle gap with idle cores: all threads, no second look.
        let mut last = (t0, idle);
        let got = decide(
            &mut last,
            fits,
            t0 + Duration::from_secs(4),
            || Some(Sample { busy: 20, ours: 0 }),
            |_| unreachable!("no second look"),
        );
        assert_eq!(got.map(|g| g.0), Some(true));
        // Too soon after the last look: nothing decided.
        let mut last = (t0, idle);
        assert_eq!(decide(&mut last, fits, t0, || Some(idle), |_| t0), None);
    }

    /// ggml's CPU backend plans a graph for the context's threads and runs it on the threads
    /// OpenMP gives it: one, while [`crate::llama::limit_threads`] holds. Logits must not
    /// depend on which (each output row is one thread's dot product either way).
    #[test]
    fn one_thread_computes_exactly_what_all_threads_compute() {
        use crate::llama::{ContextParams, Logits, Model, ModelParams};
        if !crate::llama::can_limit_threads() {
            return;
        }
        let dir = std::env::temp_dir().join("amd-engine-unit-models");
        let path =
            crate::testing::testmodel::cached_tiny_model_head64(&dir).expect("write test model");
        let model = Model::load(
            &path,
            &ModelParams {
                gpu_layers: 0,
                vocab_only: false,
            },
        )
        .expect("load");
        let params = ContextParams {
            kv_types: crate::KvTypes::default(),
            flash_attention: false,
            n_ctx: 256,
            n_batch: 64,
            n_threads: 2,
            n_threads_batch: 2,
        };
        let prompt: Vec<i32> = (0..40).map(|i| 100 + i * 37).collect();
        // The switch reaches the OpenMP runtime.
        // SAFETY: looks up OpenMP's `int omp_get_max_active_levels(void)` and calls it.
        let levels = unsafe {
            let f = libc::dlsym(libc::RTLD_DEFAULT, c"omp_get_max_active_levels".as_ptr());
            assert!(!f.is_null());
            std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn() -> libc::c_int>(f)
        };
        let run = |one: bool| {
            let mut ctx = model.new_context(&params).expect("context");
            crate::llama::limit_threads(one);
            // SAFETY: a plain getter.
            assert_eq!(unsafe { levels() }, if one { 0 } else { 1 });
            let mut out = Vec::new();
            ctx.decode(&prompt, 0, Logits::All).expect("prefill");
            for i in 0..prompt.len() {
                out.extend_from_slice(ctx.logits_at(i).expect("logits"));
            }
            for step in 0..8 {
                let t = [500 + step * 11];
                ctx.decode(&t, prompt.len() + step as usize, Logits::Last)
                    .expect("step");
                out.extend_from_slice(ctx.logits().expect("logits"));
            }
            crate::llama::limit_threads(false);
            out
        };
        let all = run(false);
        let one = run(true);
        assert_eq!(all.len(), one.len());
        assert!(all
            .iter()
            .zip(&one)
            .all(|(a, b)| a.to_bits() == b.to_bits()));

        // The switch is the calling thread's (OpenMP's max-active-levels-var belongs to a
        // thread's data environment): another thread's setting leaves ours alone, so engines
        // (and tests) side by side do not change each other's threads.
        crate::llama::limit_threads(true);
        std::thread::spawn(|| crate::llama::limit_threads(false))
            .join()
            .expect("thread");
        // SAFETY: a plain getter.
        assert_eq!(unsafe { levels() }, 0);
        crate::llama::limit_threads(false);
    }

    /// cgroup v2 files as a container started with `docker run --cpus=2` shows them (written
    /// here in the kernel's format; no container runs on this machine).
    const SELF_CGROUP: &str = "0::/\n";
    const CPU_MAX: &str = "200000 100000\n";
    const CPU_STAT: &str =
        "usage_usec 73201554\nuser_usec 61022000\nsystem_usec 12179554\nnr_periods 100\n";

    #[test]
    fn a_cpu_quota_is_read_from_the_cgroup() {
        assert_eq!(parse_self_cgroup(SELF_CGROUP), Some("/"));
        assert_eq!(
            parse_self_cgroup("12:cpu,cpuacct:/old\n0::/user.slice/app.scope\n"),
            Some("/user.slice/app.scope")
        );
        assert_eq!(parse_self_cgroup("12:cpu:/v1-only\n"), None);
        assert_eq!(parse_cpu_max(CPU_MAX), Some(2.0));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_stat(CPU_STAT), Some(7320));
        assert_eq!(parse_cpu_stat("user_usec 5\n"), None);
    }

    #[test]
    fn under_a_quota_only_the_containers_other_work_counts() {
        // 1 s of a 2-core quota: the cgroup used 1.95 cores, 1.9 of them ours: others 0.05,
        // although the 64-core host around it was busy (its /proc/stat is not read).
        let before = Sample {
            busy: 7320,
            ours: 500,
        };
        let after = Sample {
            busy: 7320 + 195,
            ours: 500 + 190,
        };
        let others = others_cores(before, after, 1.0);
        assert!((others - 0.05).abs() < 1e-9, "{others}");
        assert!(all_threads_fit(2, 2, others));
        // Another process in the container taking a core: one thread.
        let busy = Sample {
            busy: 7320 + 200,
            ours: 500 + 100,
        };
        assert!(!all_threads_fit(2, 2, others_cores(before, busy, 1.0)));
    }

    #[test]
    fn this_process_can_be_sampled_here() {
        if cfg!(target_os = "linux") {
            let s = read_sample(&Source::Cpus(allowed_cpus())).expect("/proc is readable on Linux");
            assert!(s.busy > 0);
        }
    }
}
