//! logship: a node-level log shipper.
//!
//! ```text
//!  discover ──► follow ──► decode ──► encode ──► batch ──► ship ──► Elasticsearch
//!  (tail)      (tail)     (decode)   (encode)   (buffer)  (sink)
//!                 ▲                                         │
//!                 └──────── checkpoint store ◄── acks ──────┘
//! ```
//!
//! * [`tail`] finds files from include/exclude globs (inotify plus a periodic
//!   rescan), identifies each by device, inode and a fingerprint of its first
//!   line, and runs one follower task per file: reads sized to what the file
//!   holds (up to 256 KiB; catch-up on the blocking pool, a few new bytes on
//!   the follower's task), lines split with `memchr`, rotation (rename), copytruncate (the
//!   file's generation goes up, noticed at every read) and deletion handled,
//!   the fd of a rotated or deleted file kept until it is read to its end.
//!   At start, files the checkpoints know that were rotated away (renamed,
//!   copied, compressed) while logship was down are found and read to their
//!   end; those gone are counted as lost.
//! * [`decode`] turns physical lines into logical ones: CRI (`P`/`F` parts
//!   joined), docker `json-file` (chunks joined), plain; auto-detected per
//!   file; lines over `max_line_bytes` cut and flagged, never buffered without
//!   bound; undecodable lines shipped as plain text and flagged.
//! * [`encode`] writes each line as a bulk `create` item: a hand-written ECS
//!   document and a deterministic `_id` (node, file identity, generation,
//!   offset), into an [`event::EncodedSpan`] — a contiguous byte range of one
//!   file generation, the unit of acknowledgement.
//! * [`buffer`] gathers spans into batches (bytes, events, timeout) over
//!   bounded channels; when the sink is busy, sends block and the followers
//!   stop reading, so the files hold the backlog. With `buffer: {type: disk}`
//!   batches go through a durable segment queue first, and a file's
//!   checkpoint advances once its batch is fsync'd there.
//! * [`sink::elasticsearch`] gzips each batch on the blocking pool, sends up
//!   to `concurrency` `_bulk` requests, walks every item (2xx and 409
//!   delivered, 429/5xx retried alone with capped jittered backoff, other 4xx
//!   dead-lettered durably) and retries whole-request failures while the
//!   cluster is unreachable for as long as it takes; a document that fails
//!   on its own while the cluster answers is dead-lettered after
//!   `retry.give_up_after`.
//! * [`tail::Checkpointer`] receives the acks: a file's checkpoint moves to
//!   the end of the longest run of acknowledged spans from its start (the ack
//!   watermark) and is written atomically every 500 ms and at shutdown. A
//!   restart re-reads at most what was not acknowledged; the `_id`s make
//!   Elasticsearch answer 409 for lines it already has.
//! * [`journald`] ships the systemd journal: one `journalctl --follow
//!   --output=export` child per journald source, entries encoded as ECS
//!   documents with `_id`s from their seqnum, spans acknowledged like file
//!   spans, the cursor of the ack watermark stored in `journald.json`.
//! * [`audit`] (`logship audit`) reads a file through the same
//!   [`tail::pipeline`] as its follower, computes every line's `_id` with
//!   the identity and generation the checkpoint store (read only) knows,
//!   and looks them up in Elasticsearch: present, missing, dropped, not
//!   yet shipped, dead-lettered, or of an unknown generation.
//! * [`app`] wires the stages and owns shutdown; [`config`] parses and
//!   validates the YAML file; [`telemetry`] holds the counters, logging and
//!   the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/api/v1/files`,
//!   `/api/v1/journals`);
//!   [`k8s`] keeps a node-local pod cache and a namespace cache (one watch
//!   each) and serialises each file's pod metadata once.

pub mod app;
pub mod audit;
pub mod buffer;
pub mod config;
pub mod decode;
pub mod encode;
pub mod event;
pub mod journald;
pub mod k8s;
pub mod pool;
pub mod processors;
pub mod sink;
pub mod tail;
pub mod telemetry;
