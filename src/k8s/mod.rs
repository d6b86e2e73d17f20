//! Kubernetes metadata (a later issue). Nothing here yet.
