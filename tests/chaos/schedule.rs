//! One schedule: a fresh world, agent and index; randomized actions for a
//! fixed time; then settle and verify.
//!
//! Every choice comes from one seeded RNG (writers have their own, derived
//! from the same seed), so a seed replays the same sequence of actions; the
//! interleaving with the agent's own timing differs from run to run.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{AgentConfig, AgentCtl, Buffer};
use crate::proxy::Proxy;
use crate::support::elasticsearch::{self, Elasticsearch};
use crate::support::logship::{Options, Setup};
use crate::verify::{self, Verdict};
use crate::world::{Layout, Rotation, STREAMS, World};

/// Action kinds, as named in `CHAOS_ACTIONS`.
pub const ACTIONS: &[(&str, u32)] = &[
    // Write a large burst into one stream (the follower falls behind).
    ("burst", 8),
    // Rotate one stream its way (kubelet rename, logrotate rename, copytruncate).
    ("rotate", 12),
    // copytruncate a host stream (the copy is not matched).
    ("copytruncate", 4),
    // Delete rotated files beyond the kept count.
    ("prune", 5),
    // gzip older rotated files, delete the originals.
    ("compress", 5),
    // A banner stream starts a new file with the same first line (delete
    // and create, or rewrite in place).
    ("same_header", 4),
    // kill -9 at a random moment.
    ("kill9", 6),
    // kill -9 while a bulk request is in flight (answers held by the proxy).
    ("kill9_inflight", 3),
    // kill -9 while checkpoints.json.tmp exists, else at random sub-second
    // offsets after start, several times in a row.
    ("kill9_loop", 2),
    // SIGTERM, then restart.
    ("sigterm", 3),
    // SIGHUP after editing the config.
    ("sighup", 5),
    // Elasticsearch unreachable (connections refused) for 1–6 s.
    ("es_down", 3),
    // Elasticsearch answers late (0.3–1.5 s) for a few seconds.
    ("es_slow", 2),
    // Stop the agent, rotate (and prune, compress) while it is down, restart.
    ("down_rotate", 4),
    // A backlog (a burst, Elasticsearch slow), a rotation, and kill -9
    // 0.2–7 s later: while the rotated file drains, or after a rescan found
    // it again under its new name (app/*.log*).
    ("rotate_kill", 4),
];

pub struct Plan {
    pub seed: u64,
    pub buffer: Buffer,
    pub duration: Duration,
    /// Enabled action names.
    pub actions: Vec<&'static str>,
    pub name: String,
    /// Keep the index of a failed schedule (not in the long run: hundreds
    /// of thousands of documents per schedule).
    pub keep_index: bool,
}

pub struct Outcome {
    pub plan_seed: u64,
    pub buffer: Buffer,
    pub counts: BTreeMap<&'static str, u32>,
    pub kills: u64,
    pub kills_in_flight: u64,
    pub kills_in_checkpoint_write: u64,
    pub verdict: Verdict,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn summary(&self) -> String {
        let actions: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "seed={} buffer={} {:.0}s | {} | kills={} (in flight {}, during checkpoint write {}) | {}",
            self.plan_seed,
            self.buffer.name(),
            self.elapsed.as_secs_f64(),
            actions.join(" "),
            self.kills,
            self.kills_in_flight,
            self.kills_in_checkpoint_write,
            self.verdict.summary()
        )
    }
}

struct Run<'a> {
    rng: fastrand::Rng,
    world: World,
    ctl: AgentCtl,
    proxy: &'a Proxy,
    enabled: Vec<(&'static str, u32)>,
    counts: BTreeMap<&'static str, u32>,
    restart_at: Option<Instant>,
    es_up_at: Option<Instant>,
    es_fast_at: Option<Instant>,
    /// `read_from: end` reload window: phys created before this are marked.
    read_from_end_until: Option<Instant>,
    kills_in_flight: u64,
    kills_in_checkpoint_write: u64,
    /// `AgentCtl::stops` when last looked at.
    stops_seen: u64,
    /// Problems with the test's own expectations (a kill that should have
    /// had a request in flight did not).
    harness_problems: Vec<String>,
}

pub fn run(plan: &Plan) -> Outcome {
    let started = Instant::now();
    let es: &Elasticsearch = elasticsearch::shared();
    let proxy = Proxy::start(es.url());
    let setup = Setup::new(&plan.name, &proxy.url(), Options::default());
    let _ = es.request(
        reqwest::Method::DELETE,
        &format!("{}?allow_no_indices=true", setup.index_pattern),
        "application/json",
        None,
    );
    let pattern = setup.index_pattern.clone();
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let world = World::create(&setup.logs(), rng.u64(..));
    let ctl = AgentCtl::start(
        setup,
        &proxy.url(),
        AgentConfig::base(plan.buffer),
        world.t0,
    );
    let enabled: Vec<(&'static str, u32)> = ACTIONS
        .iter()
        .filter(|(name, _)| plan.actions.contains(name))
        .copied()
        .collect();
    let mut run = Run {
        rng,
        world,
        ctl,
        proxy: &proxy,
        enabled,
        counts: BTreeMap::new(),
        restart_at: None,
        es_up_at: None,
        es_fast_at: None,
        read_from_end_until: None,
        kills_in_flight: 0,
        kills_in_checkpoint_write: 0,
        stops_seen: 0,
        harness_problems: Vec::new(),
    };
    let begin = Instant::now();
    let deadline = begin + plan.duration;
    let inflight_enabled = plan.actions.contains(&"kill9_inflight");
    while Instant::now() < deadline {
        run.timers();
        // Every schedule has at least one kill with a request in flight.
        if inflight_enabled
            && run.kills_in_flight == 0
            && begin.elapsed() > plan.duration / 2
            && run.kill9_inflight()
        {
            *run.counts.entry("kill9_inflight").or_default() += 1;
            continue;
        }
        run.step();
        let pause = run.rng.u64(20..400);
        std::thread::sleep(Duration::from_millis(pause));
    }
    run.finish();
    let verdict = verify::verify(
        es,
        &pattern,
        &run.world,
        &mut run.ctl,
        &run.harness_problems,
    );
    if verdict.failed && plan.keep_index {
        // The index stays for a person to look at (it goes with the node).
        save_artifacts(&plan.name, &run.ctl, &verdict.report);
        println!("index of the failed schedule: {}/{pattern}", es.url());
    } else {
        if verdict.failed {
            save_artifacts(&plan.name, &run.ctl, &verdict.report);
        }
        let _ = es.request(
            reqwest::Method::DELETE,
            &format!("{pattern}?allow_no_indices=true"),
            "application/json",
            None,
        );
    }
    run.ctl.stop();
    Outcome {
        plan_seed: plan.seed,
        buffer: plan.buffer,
        counts: run.counts,
        kills: run.ctl.kills,
        kills_in_flight: run.kills_in_flight,
        kills_in_checkpoint_write: run.kills_in_checkpoint_write,
        verdict,
        elapsed: started.elapsed(),
    }
}

impl Run<'_> {
    fn timers(&mut self) {
        self.observe();
        self.es_timers();
        let now = Instant::now();
        if self.read_from_end_until.is_some_and(|t| now >= t) {
            self.read_from_end_until = None;
        }
        if !self.ctl.running() && self.restart_at.is_none_or(|t| now >= t) {
            self.restart_at = None;
            self.ctl.restart();
            self.mark_stopped();
        }
        self.ctl.check_alive();
        self.observe();
    }

    /// While the agent runs, every matched file is one it can see; after
    /// a process stop, deleted files it held are out of reach.
    fn observe(&mut self) {
        if self.ctl.stops != self.stops_seen {
            self.stops_seen = self.ctl.stops;
            let k = self.ctl.knowledge_at_last_stop();
            for i in 0..STREAMS.len() {
                self.world.lock(i).agent_stopped(&k);
            }
        }
        if self.ctl.running() {
            self.world.observe();
        }
    }

    /// Ends outages and slow periods that are due.
    fn es_timers(&mut self) {
        let now = Instant::now();
        if self.es_up_at.is_some_and(|t| now >= t) {
            self.es_up_at = None;
            self.proxy.set_up(true);
            self.ctl.event("Elasticsearch reachable again".to_string());
        }
        if self.es_fast_at.is_some_and(|t| now >= t) {
            self.es_fast_at = None;
            self.proxy.set_delay(Duration::ZERO);
            self.ctl
                .event("Elasticsearch answers at once again".to_string());
        }
    }

    /// Every truncation so far happened before an agent stop or reload.
    fn mark_stopped(&mut self) {
        for i in 0..STREAMS.len() {
            for p in &mut self.world.lock(i).phys {
                if let Some(t) = &mut p.truncation {
                    t.stopped_after = true;
                }
            }
        }
    }

    fn pick(&mut self) -> Option<&'static str> {
        let total: u32 = self.enabled.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut x = self.rng.u32(0..total);
        for (name, w) in &self.enabled {
            if x < *w {
                return Some(name);
            }
            x -= w;
        }
        None
    }

    fn step(&mut self) {
        let Some(action) = self.pick() else { return };
        let done = match action {
            "burst" => self.burst(),
            "rotate" => {
                let i = self.rng.usize(0..STREAMS.len());
                self.rotate(i)
            }
            "copytruncate" => self.copytruncate(),
            "prune" => self.prune_or_compress(false),
            "compress" => self.prune_or_compress(true),
            "same_header" => self.same_header(),
            "kill9" => self.kill9(),
            "kill9_inflight" => self.kill9_inflight(),
            "kill9_loop" => self.kill9_loop(),
            "sigterm" => self.sigterm(),
            "sighup" => self.sighup(),
            "es_down" => self.es_down(),
            "es_slow" => self.es_slow(),
            "down_rotate" => self.down_rotate(),
            "rotate_kill" => self.rotate_kill(),
            _ => false,
        };
        if done {
            *self.counts.entry(action).or_default() += 1;
        }
        self.observe();
    }

    /// The agent is in a state where a file may leave its globs fairly:
    /// down, or up for long enough to have found every file.
    fn may_move_files(&self) -> bool {
        !self.ctl.running() || self.ctl.uptime() > Duration::from_secs(2)
    }

    fn burst(&mut self) -> bool {
        let i = self.rng.usize(0..STREAMS.len());
        let n = self.rng.usize(300..3000);
        self.world.lock(i).write_lines(n);
        true
    }

    fn rotate(&mut self, i: usize) -> bool {
        if STREAMS[i].rotation == Rotation::None || !self.may_move_files() {
            return false;
        }
        let at = self.world.now();
        // A file younger than 2 s may not have been found by a running agent
        // yet; rotating it then is not a fair test.
        if self.ctl.running()
            && self.world.lock(i).current_phys().created + Duration::from_secs(2) > at
        {
            return false;
        }
        let late = if self.rng.bool() {
            self.rng.usize(1..5)
        } else {
            0
        };
        let k = self.ctl.knowledge_now();
        let mut s = self.world.lock(i);
        let what = s.rotate(at, &k, late);
        if let Some(what) = what {
            let name = s.name();
            if let Some(until) = self.read_from_end_until
                && Instant::now() < until
            {
                s.current_phys().in_read_from_end_reload = true;
            }
            drop(s);
            self.ctl.event(format!("{name}: {what}"));
            true
        } else {
            false
        }
    }

    fn copytruncate(&mut self) -> bool {
        let candidates: Vec<usize> = (0..STREAMS.len())
            .filter(|&i| STREAMS[i].rotation == Rotation::CopyTruncate)
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let i = candidates[self.rng.usize(0..candidates.len())];
        // A third of the time let a running agent catch up first (the usual
        // case), a third of the time write a burst and truncate at once (the
        // follower is behind), else truncate whenever.
        let behind = match self.rng.u8(0..3) {
            0 if self.ctl.running() => {
                self.wait_read_to_end(i, Duration::from_secs(3));
                false
            }
            1 => {
                let n = self.rng.usize(200..2000);
                self.world.lock(i).write_lines(n);
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..300)));
                true
            }
            _ => false,
        };
        let at = self.world.now();
        let k = self.ctl.knowledge_now();
        let mut s = self.world.lock(i);
        let old_size = s.current_phys().size;
        let what = s.copytruncate(at, &k);
        // The application goes on writing, sometimes a lot at once: when the
        // follower was behind, more than the file held before (up to 2 MB),
        // so the new content passes the old read offset before the follower
        // looks at the file again.
        let mut after = 0;
        if behind && old_size < 2 << 20 {
            while s.current_phys().size <= old_size {
                s.write_lines(200);
                after += 200;
            }
        } else if self.rng.bool() {
            after = self.rng.usize(200..3000);
            s.write_lines(after);
        }
        let name = s.name();
        drop(s);
        self.ctl
            .event(format!("{name}: {what}, then {after} lines at once"));
        true
    }

    /// Pauses the stream's writer until the agent has read (and acked) its
    /// live file to the end, or `timeout`; resumes it.
    fn wait_read_to_end(&mut self, i: usize, timeout: Duration) {
        self.world.lock(i).paused = true;
        let started = Instant::now();
        while started.elapsed() < timeout && self.ctl.running() {
            self.ctl.refresh();
            let files = self.ctl.files();
            let mut s = self.world.lock(i);
            let p = s.current_phys();
            let done = p
                .key()
                .and_then(|k| files.get(&k))
                .is_some_and(|f| f.acked >= p.size && f.read >= p.size);
            drop(s);
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.world.lock(i).paused = false;
    }

    fn prune_or_compress(&mut self, compress: bool) -> bool {
        if !self.may_move_files() {
            return false;
        }
        let i = self.rng.usize(0..STREAMS.len());
        let at = self.world.now();
        let k = self.ctl.knowledge_now();
        let mut s = self.world.lock(i);
        let done = if compress {
            s.compress(at, &k)
        } else {
            s.prune(at, &k)
        };
        let name = s.name();
        drop(s);
        if done.is_empty() {
            return false;
        }
        let verb = if compress { "compressed" } else { "deleted" };
        self.ctl
            .event(format!("{name}: {verb} {}", done.join(", ")));
        true
    }

    fn same_header(&mut self) -> bool {
        if !self.may_move_files() {
            return false;
        }
        let candidates: Vec<usize> = (0..STREAMS.len()).filter(|&i| STREAMS[i].banner).collect();
        let i = candidates[self.rng.usize(0..candidates.len())];
        let at = self.world.now();
        if self.ctl.running()
            && self.world.lock(i).current_phys().created + Duration::from_secs(2) > at
        {
            return false;
        }
        let in_place = self.rng.bool();
        if in_place && self.ctl.running() && self.rng.bool() {
            self.wait_read_to_end(i, Duration::from_secs(3));
        }
        let at = self.world.now();
        let k = self.ctl.knowledge_now();
        let mut s = self.world.lock(i);
        let what = if in_place {
            s.rewrite_in_place(at, &k)
        } else {
            s.recreate(at, &k)
        };
        // The new file's first line is the banner, at once.
        s.write_lines(1);
        let name = s.name();
        drop(s);
        self.ctl.event(format!("{name}: {what}"));
        true
    }

    /// After a stop: down for a while (half the time restarted at once).
    fn stay_down(&mut self) {
        self.mark_stopped();
        self.restart_at = Some(if self.rng.bool() {
            Instant::now()
        } else {
            Instant::now() + Duration::from_millis(self.rng.u64(200..3000))
        });
    }

    fn kill9(&mut self) -> bool {
        if !self.ctl.running() {
            return false;
        }
        self.ctl.kill9("random moment");
        self.stay_down();
        true
    }

    /// Holds Elasticsearch's answers back, waits for a bulk request in
    /// flight, kills the agent before its answer is passed on, and checks
    /// after the kill that the answer was indeed never passed on.
    fn kill9_inflight(&mut self) -> bool {
        if !self.ctl.running() || !self.proxy.is_up() {
            return false;
        }
        let delay = Duration::from_millis(self.rng.u64(800..1500));
        let old_delay = self.proxy.delay();
        self.proxy.set_delay(delay);
        // Something to send.
        let i = self.rng.usize(0..STREAMS.len() - 1);
        self.world.lock(i).write_lines(self.rng.usize(50..500));
        let proxy = self.proxy;
        let started = Instant::now();
        // A loaded machine, a backoff after an outage: give it time.
        let wait = Duration::from_secs(30);
        let mut victim = None;
        let before = self.rng.u64(0..(delay.as_millis() as u64 - 300));
        let killed = self.ctl.kill9_when("bulk request in flight", || {
            if let Some((id, age)) = proxy.oldest_in_flight()
                && age >= Duration::from_millis(before)
                && age + Duration::from_millis(150) < delay
            {
                // Hold its answer until after the kill, however long the
                // kill takes on a loaded machine.
                proxy.set_delay(Duration::from_secs(3600));
                victim = Some(id);
                return Some(true);
            }
            if started.elapsed() > wait {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
            Some(false)
        });
        self.proxy.set_delay(old_delay);
        if !killed {
            self.ctl.event(format!(
                "kill9_inflight skipped: no bulk request in flight within {wait:?}"
            ));
            return false;
        }
        match victim {
            Some(id) if !self.proxy.was_answered(id) => self.kills_in_flight += 1,
            _ => self.harness_problems.push(
                "kill9_inflight: the answer to the bulk request reached the agent before the kill"
                    .to_string(),
            ),
        }
        self.stay_down();
        true
    }

    /// Several kills in a row, each right after a start: when
    /// `checkpoints.json.tmp` appears (a checkpoint write in progress),
    /// else at a random sub-second offset.
    fn kill9_loop(&mut self) -> bool {
        if !self.ctl.running() {
            return false;
        }
        let tmp = self.ctl.setup.data_dir().join("checkpoints.json.tmp");
        let rounds = self.rng.usize(3..8);
        for _ in 0..rounds {
            self.es_timers();
            if !self.ctl.running() {
                self.ctl.restart();
                self.observe();
            }
            let i = self.rng.usize(0..STREAMS.len() - 1);
            self.world.lock(i).write_lines(self.rng.usize(20..300));
            let limit = Duration::from_millis(self.rng.u64(50..1200));
            let started = Instant::now();
            let mut in_write = false;
            // A kill may leave a temp file behind: only a new write counts.
            let stamp = |p: &std::path::Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
            };
            let stale = stamp(&tmp);
            let tmp = tmp.clone();
            self.ctl.kill9_when("kill loop", || {
                let now = stamp(&tmp);
                if now.is_some() && now != stale {
                    in_write = true;
                    return Some(true);
                }
                if started.elapsed() >= limit {
                    return Some(true);
                }
                std::thread::sleep(Duration::from_micros(200));
                Some(false)
            });
            if in_write {
                self.kills_in_checkpoint_write += 1;
            }
            self.mark_stopped();
        }
        self.stay_down();
        true
    }

    fn sigterm(&mut self) -> bool {
        if !self.ctl.running() {
            return false;
        }
        self.ctl.sigterm();
        self.stay_down();
        true
    }

    fn sighup(&mut self) -> bool {
        if !self.ctl.running() {
            return false;
        }
        let mut next = self.ctl.config.clone();
        match self.rng.u8(0..3) {
            // read_from is only switched to `end` while every source is
            // configured, and back; files created during the reload must be
            // read from their start (they appeared after logship started).
            0 if next.extra_source => next.read_from_end = !next.read_from_end,
            1 if !next.read_from_end => next.extra_source = !next.extra_source,
            _ => next.batch_events = [100, 250, 500, 1000][self.rng.usize(0..4)],
        }
        let to_end = next.read_from_end && !self.ctl.config.read_from_end;
        self.ctl.reload(next);
        self.mark_stopped();
        if to_end {
            // New files while the pipeline drains and restarts.
            self.read_from_end_until = Some(Instant::now() + Duration::from_secs(3));
            std::thread::sleep(Duration::from_millis(self.rng.u64(0..200)));
            for _ in 0..self.rng.usize(1..3) {
                let i = self.rng.usize(0..STREAMS.len());
                if STREAMS[i].rotation != Rotation::None
                    && STREAMS[i].rotation != Rotation::CopyTruncate
                {
                    self.rotate_now(i);
                }
            }
        }
        true
    }

    /// Rotates regardless of the file's age (reload window).
    fn rotate_now(&mut self, i: usize) {
        let at = self.world.now();
        let k = self.ctl.knowledge_now();
        let mut s = self.world.lock(i);
        if let Some(what) = s.rotate(at, &k, 0) {
            s.current_phys().in_read_from_end_reload = true;
            let name = s.name();
            drop(s);
            self.ctl
                .event(format!("{name}: {what} (during the reload)"));
        }
    }

    fn es_down(&mut self) -> bool {
        if !self.proxy.is_up() {
            return false;
        }
        self.proxy.set_up(false);
        let secs = self.rng.u64(1000..6000);
        self.es_up_at = Some(Instant::now() + Duration::from_millis(secs));
        self.ctl.event(format!(
            "Elasticsearch unreachable for {:.1}s",
            secs as f64 / 1000.0
        ));
        true
    }

    fn es_slow(&mut self) -> bool {
        if self.es_fast_at.is_some() {
            return false;
        }
        let delay = Duration::from_millis(self.rng.u64(300..1500));
        let length = Duration::from_millis(self.rng.u64(2000..6000));
        self.slow_for(delay, length);
        true
    }

    fn slow_for(&mut self, delay: Duration, length: Duration) {
        self.proxy.set_delay(delay);
        self.es_fast_at = Some(Instant::now() + length);
        self.ctl.event(format!(
            "Elasticsearch answers {}ms late for {:.1}s",
            delay.as_millis(),
            length.as_secs_f64()
        ));
    }

    /// The case users hit: the agent is down while the kubelet (or
    /// logrotate) rotates, deletes and compresses.
    fn down_rotate(&mut self) -> bool {
        if self.ctl.running() {
            if self.rng.bool() {
                self.ctl.kill9("down_rotate");
            } else {
                self.ctl.sigterm();
            }
            self.mark_stopped();
        }
        for _ in 0..self.rng.usize(1..4) {
            let i = self.rng.usize(0..STREAMS.len());
            if STREAMS[i].layout != Layout::Extra {
                self.world.lock(i).write_lines(self.rng.usize(10..400));
                self.rotate(i);
            }
            if self.rng.u8(0..3) == 0 {
                let compress = self.rng.bool();
                self.prune_or_compress(compress);
            }
        }
        self.restart_at = Some(Instant::now() + Duration::from_millis(self.rng.u64(100..2000)));
        true
    }

    fn rotate_kill(&mut self) -> bool {
        if !self.ctl.running() || !self.may_move_files() {
            return false;
        }
        let rotating: Vec<usize> = (0..STREAMS.len())
            .filter(|&i| matches!(STREAMS[i].rotation, Rotation::Kubelet | Rotation::Logrotate))
            .collect();
        // Half the time a file whose glob still matches it once renamed.
        let app: Vec<usize> = rotating
            .iter()
            .copied()
            .filter(|&i| STREAMS[i].layout == Layout::App)
            .collect();
        let in_app = self.rng.bool() && !app.is_empty();
        let i = if in_app {
            app[self.rng.usize(0..app.len())]
        } else {
            rotating[self.rng.usize(0..rotating.len())]
        };
        let mut wait = Duration::from_millis(self.rng.u64(200..7000));
        if in_app && self.es_fast_at.is_none() && self.proxy.is_up() {
            // The renamed file is read to its end quickly, its follower
            // ends, a rescan (at most `rescan_interval`, 5 s, later) finds it
            // again under its new name; meanwhile its last batches wait for
            // their acknowledgements.
            let delay = Duration::from_millis(self.rng.u64(3000..5000));
            self.slow_for(delay, Duration::from_secs(15));
            let n = self.rng.usize(1500..3000);
            self.world.lock(i).write_lines(n);
            wait = Duration::from_millis(self.rng.u64(3000..9000));
        } else {
            if self.rng.bool() && self.es_fast_at.is_none() && self.proxy.is_up() {
                self.es_slow();
            }
            if self.rng.bool() {
                let n = self.rng.usize(500..3000);
                self.world.lock(i).write_lines(n);
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..500)));
            }
        }
        // Let a younger file age (a rotation of a file the agent has not
        // found yet is not what this tests).
        let at = self.world.now();
        let created = self.world.lock(i).current_phys().created;
        if created + Duration::from_secs(2) > at {
            std::thread::sleep(created + Duration::from_secs(2) - at);
        }
        if !self.rotate(i) {
            return false;
        }
        let rotated_at = Instant::now();
        if in_app {
            // logrotate rotates the other files of its run right after.
            std::thread::sleep(Duration::from_millis(self.rng.u64(500..2000)));
            for &j in &app {
                if j != i {
                    self.rotate(j);
                }
            }
        }
        // In app/ the renamed file is followed again under its new name:
        // kill right after the next checkpoint write once that happened.
        let renamed = format!("/app/{}.log.1", STREAMS[i].name);
        let until = rotated_at + wait;
        let mut why = format!(
            "{:.1}s after rotating {}",
            wait.as_secs_f64(),
            STREAMS[i].name
        );
        while Instant::now() < until {
            self.es_timers();
            if in_app {
                self.ctl.refresh();
                if self
                    .ctl
                    .files()
                    .values()
                    .any(|f| f.path.ends_with(&renamed))
                {
                    std::thread::sleep(Duration::from_millis(600));
                    why = format!(
                        "{:.1}s after rotating {}, just after it was followed again as {}.log.1",
                        rotated_at.elapsed().as_secs_f64(),
                        STREAMS[i].name,
                        STREAMS[i].name
                    );
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctl.kill9(&why);
        self.stay_down();
        true
    }

    /// Ends the schedule: writers stop, Elasticsearch is back, the agent
    /// runs with the base config.
    fn finish(&mut self) {
        self.world.stop_writers();
        self.proxy.set_delay(Duration::ZERO);
        if !self.proxy.is_up() {
            self.proxy.set_up(true);
            self.ctl.event("Elasticsearch reachable again".to_string());
        }
        if !self.ctl.check_alive() {
            self.ctl.restart();
            self.mark_stopped();
            self.observe();
        } else if self.ctl.config != *self.ctl.base() {
            self.ctl.reload_base();
            self.mark_stopped();
        }
        self.ctl.event("writers stopped; settling".to_string());
    }
}

/// Keeps what a failed schedule leaves for a person to look at:
/// `target/tmp/chaos/<name>/` with the report, the agent's stderr, its
/// checkpoints, and a listing of the log files (path, inode, size).
fn save_artifacts(name: &str, ctl: &AgentCtl, report: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let _ = std::fs::write(dir.join("report.txt"), report);
    let _ = std::fs::copy(ctl.setup.stderr_path(), dir.join("logship.stderr"));
    let _ = std::fs::copy(
        ctl.setup.data_dir().join("checkpoints.json"),
        dir.join("checkpoints.json"),
    );
    let _ = std::fs::copy(ctl.setup.config_path(), dir.join("logship.yaml"));
    let mut listing = String::new();
    list(&ctl.setup.logs(), &mut listing);
    let _ = std::fs::write(dir.join("files.txt"), listing);
    println!("artifacts of the failed schedule: {}", dir.display());
}

fn list(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list(&path, out);
        } else {
            out.push_str(&format!(
                "{} inode {} size {}{}\n",
                path.display(),
                meta.ino(),
                meta.len(),
                std::fs::read_link(&path)
                    .map(|t| format!(" -> {}", t.display()))
                    .unwrap_or_default()
            ));
        }
    }
}
