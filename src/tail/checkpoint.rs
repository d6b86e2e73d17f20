//! Checkpoint store and per-file ack watermarks.
//!
//! TODO(tail helper).

use std::path::Path;

use crate::buffer::Acknowledger;
use crate::event::SpanOrigin;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing checkpoints to {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub struct Checkpointer {
    _private: (),
}

impl Checkpointer {
    /// Loads `data_dir/checkpoints.json`; a corrupt file is reported, moved
    /// aside and replaced by an empty store (never an error).
    pub fn open(data_dir: &Path) -> Result<Self, CheckpointError> {
        let _ = data_dir;
        todo!()
    }

    /// Writes the store atomically (temp file, fsync, rename) if it changed.
    pub fn persist(&self) -> Result<(), CheckpointError> {
        todo!()
    }
}

impl Acknowledger for Checkpointer {
    fn delivered(&self, spans: &[SpanOrigin]) {
        let _ = spans;
        todo!()
    }
}
