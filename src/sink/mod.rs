//! Where synced data goes. Each sink is a folder of the same shape:
//! encoder (writes → request body), response (per-item outcomes), retry (backoff), service (the client).

pub mod elasticsearch;
