//! `outage`: the node's files written while Elasticsearch is down.
//!
//! The endpoint's port is closed (connections refused) from the start. The
//! files of [`super::node::NodeLoad`] (default 1,000 × 10 lines/s + 20 ×
//! 500 lines/s), each with one line already, are written for `secs`
//! (default 60) while the agent runs; every `sample_every` (default 5 s) the
//! bench prints logship's RSS, peak RSS, CPU and the disk buffer's size:
//! memory must stay flat while the backlog grows in the files (memory
//! buffer) or on disk (disk buffer). Then the writers stop and the endpoint
//! comes up on the same port; the bench waits until every line is
//! acknowledged and prints how long that took after the endpoint came back
//! (the agent's retry backoff, up to 30 s by default, is part of it), the
//! peak RSS over the outage and over the whole run, and the exact account:
//! every line acknowledged once (a resend under its own `_id` is answered
//! 409 and counted as a replay).

use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig};
use super::endpoint::Endpoint;
use super::layout;
use super::measure::{self, ProcSample};
use super::node::{NodeLoad, expected};
use super::writers::Writers;
use super::{Account, Buffer, Common, stop_and_account, wait_for_acks};

pub struct Outage {
    pub common: Common,
    pub load: NodeLoad,
    pub secs: u64,
    pub sample_every: Duration,
}

#[derive(Clone, Debug)]
pub struct OutageRun {
    /// RSS at each sample during the outage, MiB.
    pub rss_mib: Vec<f64>,
    pub outage_peak_rss_mib: f64,
    pub peak_rss_mib: f64,
    pub account: Account,
}

impl Outage {
    pub fn run(&self) -> Result<OutageRun, String> {
        let work = self.common.fresh_dir("outage");
        let logs = work.join("logs");
        let mut endpoint = Endpoint::reserve();
        let (pods, files) = self.load.create(&logs, endpoint.epoch());
        let config = AgentConfig {
            work: &work,
            include: layout::include(&logs),
            url: endpoint.url(),
            concurrency: self.common.concurrency,
            buffer: self.common.buffer,
            batch_timeout: self.common.batch_timeout,
        };
        let buffer_dir = config.data_dir().join("buffer");
        let load_before = measure::load();
        println!(
            "outage ({}, endpoint down for {} s, {} buffer):",
            self.load.describe(),
            self.secs,
            self.common.buffer.name()
        );
        let mut agent = Agent::start(&config.write());
        let bench_before = ProcSample::this_process();
        let down = Instant::now();
        let writers = Writers::start(files, self.common.writer_threads, endpoint.epoch());
        let mut samples = Vec::new();
        let mut last = (agent.sample(), Instant::now());
        while down.elapsed() < Duration::from_secs(self.secs) {
            let next = self.sample_every * (samples.len() as u32 + 1);
            let until = next.min(Duration::from_secs(self.secs));
            if let Some(wait) = until.checked_sub(down.elapsed()) {
                std::thread::sleep(wait);
            }
            agent.assert_running();
            let now = agent.sample();
            let buffered = if self.common.buffer == Buffer::Disk {
                format!(
                    ", disk buffer {:.1} MiB",
                    measure::dir_bytes(&buffer_dir) as f64 / 1048576.0
                )
            } else {
                String::new()
            };
            println!(
                "  t={:>4.0} s: rss {:>6.1} MiB (anon {:>6.1}), peak {:>6.1} MiB, {:>5.1} % of one core{buffered}, {} lines written",
                down.elapsed().as_secs_f64(),
                measure::mib(now.rss_kib),
                measure::mib(now.anon_kib),
                measure::mib(now.hwm_kib),
                measure::percent_of_core(now.cpu_seconds - last.0.cpu_seconds, last.1.elapsed()),
                writers.lines(),
            );
            samples.push(measure::mib(now.rss_kib));
            last = (now, Instant::now());
        }
        let report = writers.stop(pods.len());
        let during = agent.sample();
        let bench_cpu = ProcSample::this_process().cpu_seconds - bench_before.cpu_seconds;
        let acked_while_down = endpoint.acknowledged();

        endpoint.up();
        let expected = expected(&pods, &report);
        let drained = wait_for_acks(
            &endpoint,
            &mut agent,
            expected.total(),
            self.common.drain_timeout,
            |_| {},
        );
        let end = agent.sample();
        let account = stop_and_account(&endpoint, agent, &expected)?;
        let Some(drained) = drained else {
            return Err(format!(
                "outage: not every line acknowledged within {:?} of the endpoint's return",
                self.common.drain_timeout
            ));
        };
        let run = OutageRun {
            outage_peak_rss_mib: measure::mib(during.hwm_kib),
            peak_rss_mib: measure::mib(end.hwm_kib),
            rss_mib: samples,
            account,
        };
        let (first, last_rss) = (
            run.rss_mib.first().copied().unwrap_or(0.0),
            run.rss_mib.last().copied().unwrap_or(0.0),
        );
        let max = run.rss_mib.iter().copied().fold(0.0, f64::max);
        let raw = report.bytes as f64 / 1048576.0;
        println!(
            "  written while down: {} lines, {:.1} MiB ({} acknowledged before: must be 0); writers' longest gap {} ms\n  \
             RSS over the outage: {:.1} MiB at the first sample, {:.1} MiB at the last ({:+.1}), {:.1} at most; \
             peak RSS {:.1} MiB during the outage\n  \
             endpoint up: every line acknowledged {:.1} s later ({:.1} MiB/s of raw input once up)\n  \
             peak RSS over the whole run: {:.1} MiB; logship used {:.1} CPU-s in all\n  \
             delivered: {}\n  \
             endpoint and writers during the outage: {:.0} % of one core\n  \
             load average: {load_before} before, {} after",
            report.lines,
            raw,
            acked_while_down,
            report.longest_gap.as_millis(),
            first,
            last_rss,
            last_rss - first,
            max,
            run.outage_peak_rss_mib,
            drained.as_secs_f64(),
            raw / drained.as_secs_f64().max(1e-9),
            run.peak_rss_mib,
            end.cpu_seconds,
            run.account,
            measure::percent_of_core(bench_cpu, Duration::from_secs(self.secs)),
            measure::load(),
        );
        Ok(run)
    }
}
