//! `catch-up` and `easy`: a backlog shipped as fast as the agent can.
//!
//! A corpus ([`super::corpus`]: `realistic` for `catch-up`, the old `easy`
//! one for `easy`; 1 GiB in 20 files by default) lies in the kubelet layout
//! in the page cache (read once before the run). The agent starts from a
//! fresh data dir and ships it all; the run ends when the endpoint has
//! acknowledged every line. Figures: MiB/s and lines/s of raw CRI input
//! over the wall time from the agent's start to the last acknowledgement,
//! logship's CPU seconds per GiB of raw input and as a percentage of one
//! core over that time, its peak RSS, and the exact account.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig};
use super::corpus::{self, Corpus, CorpusKind};
use super::endpoint::Endpoint;
use super::measure::{self, ProcSample};
use super::{Account, Buffer, Common, layout, stop_and_account, wait_for_acks};

pub struct CatchUp {
    pub common: Common,
    pub corpus: CorpusKind,
    /// Where corpora are cached between runs.
    pub cache: PathBuf,
    pub mib: u64,
    pub files: usize,
}

/// One run's figures.
#[derive(Clone, Debug)]
pub struct CatchUpRun {
    pub buffer: Buffer,
    pub seconds: f64,
    pub mib_per_s: f64,
    pub lines_per_s: f64,
    pub cpu_seconds: f64,
    pub cpu_per_gib: f64,
    pub peak_rss_mib: f64,
    pub account: Account,
}

impl CatchUp {
    fn name(&self) -> &'static str {
        match self.corpus {
            CorpusKind::Realistic => "catch-up",
            CorpusKind::Easy => "easy",
        }
    }

    /// Writes the corpus if it is not cached yet, and warms the page cache.
    pub fn prepare(&self) -> Corpus {
        let t = Instant::now();
        let corpus = corpus::prepare(self.corpus, &self.cache, self.mib, self.files);
        for file in &corpus.expected.files {
            let path = corpus.logs.join(&file.name);
            let mut f = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            std::io::copy(&mut f, &mut std::io::sink())
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        }
        println!(
            "{} corpus ({}): {:.0} MiB in {} files, ready in {:.1} s; {}",
            self.name(),
            self.corpus.name(),
            corpus.bytes as f64 / 1048576.0,
            corpus.expected.files.len(),
            t.elapsed().as_secs_f64(),
            corpus.properties
        );
        corpus
    }

    /// Ships the whole corpus once from a fresh data dir with `buffer`.
    pub fn run_once(&self, corpus: &Corpus, buffer: Buffer) -> Result<CatchUpRun, String> {
        let work = self.common.fresh_dir(self.name());
        let endpoint = Endpoint::start();
        let config = AgentConfig {
            work: &work,
            include: layout::include(&corpus.logs),
            url: endpoint.url(),
            concurrency: self.common.concurrency,
            buffer,
            batch_timeout: self.common.batch_timeout,
        };
        let config_path = config.write();
        let total = corpus.expected.total();
        let load_before = measure::load();
        let bench_before = ProcSample::this_process();
        let started = Instant::now();
        let mut agent = Agent::start(&config_path);
        let mut last = ProcSample::default();
        let waited = wait_for_acks(
            &endpoint,
            &mut agent,
            total,
            self.common.drain_timeout,
            |agent| {
                let now = agent.sample();
                if now.cpu_seconds > 0.0 {
                    last = now;
                }
            },
        );
        let seconds = started.elapsed().as_secs_f64();
        let now = agent.sample();
        let end = if now.cpu_seconds > 0.0 { now } else { last };
        let bench_cpu = ProcSample::this_process().cpu_seconds - bench_before.cpu_seconds;
        let account = stop_and_account(&endpoint, agent, &corpus.expected)?;
        if waited.is_none() {
            return Err(format!(
                "{}: not every line acknowledged within {:?}",
                self.name(),
                self.common.drain_timeout
            ));
        }
        let mib = corpus.bytes as f64 / 1048576.0;
        let run = CatchUpRun {
            buffer,
            seconds,
            mib_per_s: mib / seconds,
            lines_per_s: total as f64 / seconds,
            cpu_seconds: end.cpu_seconds,
            cpu_per_gib: end.cpu_seconds / (mib / 1024.0),
            peak_rss_mib: measure::mib(end.hwm_kib),
            account,
        };
        let traffic = endpoint.traffic();
        println!(
            "{} ({} corpus, {} buffer, concurrency {}):\n  \
             delivered: {}\n  \
             throughput: {:.1} MiB/s, {:.0} lines/s of raw CRI input ({:.1} s)\n  \
             logship: {:.2} CPU-s per GiB ({:.1} CPU-s, {:.0} % of one core), peak RSS {:.1} MiB\n  \
             endpoint and bench: {:.0} % of one core; {} bulk requests, NDJSON {:.2}x the raw input, gzip'd {:.1}x\n  \
             load average: {load_before} before, {} after",
            self.name(),
            self.corpus.name(),
            buffer.name(),
            self.common.concurrency,
            run.account,
            run.mib_per_s,
            run.lines_per_s,
            run.seconds,
            run.cpu_per_gib,
            run.cpu_seconds,
            measure::percent_of_core(run.cpu_seconds, Duration::from_secs_f64(seconds)),
            run.peak_rss_mib,
            measure::percent_of_core(bench_cpu, Duration::from_secs_f64(seconds)),
            traffic.requests,
            traffic.ndjson_bytes as f64 / corpus.bytes.max(1) as f64,
            traffic.ndjson_bytes as f64 / traffic.body_bytes.max(1) as f64,
            measure::load(),
        );
        Ok(run)
    }

    /// Memory and disk runs interleaved (m, d, m, d, …) on the same corpus,
    /// `rounds` of each, so load from other processes weighs on both alike;
    /// prints each round's disk/memory throughput ratio and the medians.
    pub fn compare(&self, corpus: &Corpus, rounds: u64) -> Result<(), String> {
        let (mut memory, mut disk, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            let m = self.run_once(corpus, Buffer::Memory)?;
            let d = self.run_once(corpus, Buffer::Disk)?;
            let ratio = d.mib_per_s / m.mib_per_s;
            println!(
                "round {round}: memory {:.1} MiB/s, disk {:.1} MiB/s: disk/memory {:.1} %",
                m.mib_per_s,
                d.mib_per_s,
                ratio * 100.0
            );
            memory.push(m.mib_per_s);
            disk.push(d.mib_per_s);
            ratios.push(ratio);
        }
        println!(
            "median MiB/s: memory {:.1}, disk {:.1}; disk/memory, median of the {rounds} rounds' ratios: {:.1} %",
            measure::median(&mut memory),
            measure::median(&mut disk),
            measure::median(&mut ratios) * 100.0
        );
        Ok(())
    }
}
