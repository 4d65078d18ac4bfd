//! Tests of the pipeline with a scripted source, an in-memory sink and an in-memory store.
